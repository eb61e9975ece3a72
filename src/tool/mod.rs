//! LLM tools and MCP server (filled in by the control-side issue).
