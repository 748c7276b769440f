"""MCP capture: sessions and tool/resource/prompt events posted by MCP servers
(`capture-event`), stored per org and read back by the MCP read routes."""
