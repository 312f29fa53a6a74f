"""The website tracker served at /mtc.js (issue: mtc.js). Not built yet."""
