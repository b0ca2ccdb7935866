#!/bin/sh
# Registers codex-async-mcp with Claude Code for the current user. Claude Code passes its whole
# environment to stdio servers, so CODEX_HOME and API keys set in your shell reach the worker Codex.
claude mcp add -s user codex_async -- codex-async-mcp "$@"
