-- Reference harness, run by Debian's real lua5.1 with Debian's real lua-dkjson on its default
-- package.path: load a plugin exactly as DeepFlow does, call it once per input line, print
-- each result with strings hex-encoded (so any byte survives the pipe).
local plugin_path, chunkname, input_path = arg[1], arg[2], arg[3]
local file = assert(io.open(plugin_path, "rb"))
local source = file:read("*a")
file:close()
assert(loadstring(source, chunkname))()
local entry = GetWorkloadTypeAndName

local function hex(s)
  return "x" .. (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end

for line in io.lines(input_path) do
  local ok, a, b = pcall(entry, line)
  if ok then
    io.write("ok ", type(a), " ", type(b), " ", type(a) == "string" and hex(a) or "-", " ",
             type(b) == "string" and hex(b) or "-", "\n")
  else
    io.write("error ", type(a) == "string" and hex(a) or ("t" .. type(a)), "\n")
  end
end
