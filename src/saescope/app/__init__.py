"""``saescope app``: a local web app over the user's RUNs and model (FastAPI; optional extra ``saescope[app]``).

``config`` (limits and binding), ``jobs`` (the one model thread and its bounded queue), ``state`` (RUNs by
id, the model and SAEs loaded once), ``schemas`` (validated requests), ``api`` (JSON routes), ``pages``
(HTML routes) and ``server`` (the application and ``serve``).
"""
