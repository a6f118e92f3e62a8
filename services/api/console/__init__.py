"""The built-in pages' static files (HTML, JS, CSS), served by ``services.api.routes.pages``."""
