"""The team's page (`GET /ui`): what the loop is doing, rendered on the server as HTML with inline SVG charts.

`overview` gathers a project's figures from the store and the service (the same calls the JSON API answers with),
`charts` draws them, `pages` lays them out. No JavaScript, no build step, no model import.
"""
