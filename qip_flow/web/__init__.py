"""The web pages: a thin layer over the services, as thin as the command line. Each route
parses, asks who is signed in (``deps``), asks the policy, calls one service and renders a
server-side page that works without JavaScript. See docs/web.md."""
