std = "max"
max_line_length = 180
files["spec"] = { std = "+busted" }
files["bench"] = { max_line_length = false }
-- types/: LuaCATS ---@meta files (lua-language-server annotations): empty function bodies,
-- class tables that only hold them
files["types"] = { ignore = { "212", "241" } }
