//! The tools as an MCP server (JSON-RPC over newline-delimited stdio, via `rmcp`).
//!
//! Owns: the MCP handler (`tools/list` with our own schemas, `tools/call` answering with one
//! text content holding the tool's JSON result; `isError` only for invalid calls).
//! Leaves to the caller: building the [`Tools`] (agents, transport) and the process's stdio;
//! [`serve`] takes any reader/writer pair so tests can drive it in memory.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{ToolDef, Tools};
use crate::client::Connect;

const INSTRUCTIONS: &str = "Run shell commands and work with files on remote agent machines. \
    Use execute for commands (it waits for them; give long builds a longer timeout), \
    process_output to follow a command that is still running, process_list to find processes, \
    process_signal to stop one. Use read_file to read files (not cat), edit_files to change them \
    (search and replace, all files or none), write_file to create or rewrite whole files, \
    list_directory to look around.";

/// Serves the tools over this process's stdin/stdout until the client closes stdin.
pub async fn serve_stdio<C: Connect>(tools: Tools<C>) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::io::stdio();
    serve(tools, stdin, stdout).await
}

/// Serves the tools over any byte stream pair until the reader ends.
pub async fn serve<C, R, W>(tools: Tools<C>, reader: R, writer: W) -> anyhow::Result<()>
where
    C: Connect,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let running = McpServer::new(tools).serve((reader, writer)).await?;
    running.waiting().await?;
    Ok(())
}

/// The MCP handler over a [`Tools`].
#[derive(Clone)]
pub struct McpServer<C: Connect> {
    tools: Arc<Tools<C>>,
    defs: Arc<Vec<Tool>>,
}

impl<C: Connect> McpServer<C> {
    /// Serves `tools`; their definitions are converted to MCP's `Tool` once, here, and listed
    /// as is on every `tools/list`.
    pub fn new(tools: Tools<C>) -> Self {
        let defs = tools.definitions().into_iter().map(to_mcp).collect();
        Self {
            tools: Arc::new(tools),
            defs: Arc::new(defs),
        }
    }
}

fn to_mcp(def: ToolDef) -> Tool {
    let schema: JsonObject = match def.input_schema {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    };
    Tool::new(def.name, def.description, Arc::new(schema))
}

impl<C: Connect> ServerHandler for McpServer<C> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wgagent", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.defs.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.defs.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.get_tool(&request.name).is_none() {
            return Err(ErrorData::invalid_params(
                Cow::Owned(format!("unknown tool {:?}", request.name)),
                None,
            ));
        }
        let args = request.arguments.map_or(Value::Null, Value::Object);
        // A client's `notifications/cancelled` cancels `context.ct`: stop waiting then (the
        // process itself keeps running on the agent, and can be found with process_list).
        let reply = tokio::select! {
            reply = self.tools.call(&request.name, &args) => reply,
            _ = context.ct.cancelled() => {
                return Err(ErrorData::internal_error(Cow::Borrowed("request cancelled by the client"), None));
            }
        };
        let content = vec![ContentBlock::text(reply.text())];
        let result = if reply.is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        Ok(result.into())
    }
}
