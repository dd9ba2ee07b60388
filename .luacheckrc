std = "max"
max_line_length = 180
files["spec"] = { std = "+busted" }
files["bench"] = { max_line_length = false }
