"""Security headers on every answer: no MIME sniffing, no referrer, no framing, and a
Content-Security-Policy that lets the page load only its own scripts, styles and images."""

from flask import Flask, Response

# The page (GET /): its script, style sheet and icon come from this service, its preview is
# a local blob: URL, and it talks only to this service. Nothing inline runs.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Everything else is JSON, text or a static file: a browser that opens one runs nothing in it.
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
HEADERS = {
    # Browsers take each answer as its Content-Type says, never as what it looks like.
    "X-Content-Type-Options": "nosniff",
    # Where a link from the page leads learns nothing of this service's URLs.
    "Referrer-Policy": "no-referrer",
    # For browsers older than frame-ancestors.
    "X-Frame-Options": "DENY",
}


def register_security_headers(app: Flask) -> None:
    """Add the headers above to every answer, errors included."""

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        response.headers["Content-Security-Policy"] = (
            PAGE_POLICY if response.mimetype == "text/html" else OTHER_POLICY)
        return response
