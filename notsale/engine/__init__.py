"""The sale rules: the Lua scripts that decide, and their Redis caller."""
