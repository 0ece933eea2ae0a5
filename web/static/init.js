// Tells the UI kit where its fonts are served (the app serves them itself, no CDN).
window.__PUBLIC_PATH__ = "/static/vendor/bootstrap-italia/fonts";
