"""API keys and orgs: hashed keys with scopes, the `auth:` config section and the admin key API.

Keys come from the store and the config; every API authenticates through `keys.Authenticator`."""
