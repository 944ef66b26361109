"""The enterprise's own web page (``xinrong enterprise portal``), served on 127.0.0.1 by the enterprise itself.

``backend`` is the interface the pages use, ``adapter`` its implementation
over the enterprise client (the only part holding keys), ``security`` the
bind, Host/Origin and CSRF guards, ``i18n`` the labels (zh default), ``app``
the Starlette application, ``server`` the uvicorn runner. Templates and the
stylesheet ship inside the package: the page loads nothing from elsewhere.
"""
