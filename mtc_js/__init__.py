"""The website tracker: `mtc.js` (readable, commented, no build step) served at /mtc.js."""
