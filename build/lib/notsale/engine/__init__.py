"""The sale rules: the clock, the Lua scripts that decide, and their Redis caller."""
