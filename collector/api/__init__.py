"""What every JSON API shares: the HTTP server, the endpoint wrapper, parameters, shapes, body
reading and rate limits. Feature packages build their routes on it; it knows no feature."""
