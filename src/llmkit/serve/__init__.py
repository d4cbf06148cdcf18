"""The OpenAI-compatible server and its chat page (``llmkit serve``).

``app.py`` (routes, keys, limits, errors) -> ``chat.py`` / ``completions.py`` (one endpoint each:
request -> prompt -> engine options -> response) -> ``scheduler.py`` (the thread that drives the
engines' step API) -> :mod:`llmkit.infer.engine`. ``protocol.py`` is the wire format, ``web/`` the
page.
"""
