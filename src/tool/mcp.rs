//! MCP server (stub, filled in below).
