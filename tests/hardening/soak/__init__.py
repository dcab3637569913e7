"""The soak scripts, and the app they and the hardening tests serve."""

#: The soak app for a server process (``module:attr``; the tests folder on the path).
APP = "hardening.soak.app:asgi"
