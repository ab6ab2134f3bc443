-- Sandbox for one DeepFlow-style plugin, run once in a fresh lupa.lua51 runtime.
--
-- Everything the engine needs is captured here as upvalues before the global table is
-- cleaned, so a plugin can neither reach nor replace it (no `debug`, no getupvalue).
-- Returns a setup function; Python calls it once per runtime and gets `install`.

local _G = _G
local type, pairs, next, tostring, tonumber, select, error, pcall =
      type, pairs, next, tostring, tonumber, select, error, pcall
local setmetatable, getmetatable, rawget, rawset, loadstring_raw =
      setmetatable, getmetatable, rawget, rawset, loadstring
local strfind, strsub, strbyte, strchar, strformat, strrep, strgsub, strlen =
      string.find, string.sub, string.byte, string.char, string.format, string.rep, string.gsub, string.len
local concat, maxn, unpack, floor, huge = table.concat, table.maxn, unpack, math.floor, math.huge
local sethook = debug.sethook
local os_time, os_clock, os_date = os.time, os.clock, os.date
local collectgarbage_raw = collectgarbage
local xpcall_raw, resume_raw, create_raw = xpcall, coroutine.resume, coroutine.create
local MEMORY_ERROR = "not enough memory"

return function(make_dkjson, bridge, hook_every, max_ticks, max_len, max_printed)
  ---------------------------------------------------------------- bounds
  -- One count hook per runtime, set once; each call only resets `ticks`.
  -- Coroutines created by the plugin inherit the hook (Lua 5.1 lua_newthread).
  local ticks, exceeded = 0, false
  local function hook()
    ticks = ticks + 1
    if ticks > max_ticks then
      exceeded = true
      error("instruction budget exceeded", 0)
    end
  end
  local function charge(bytes)
    -- Native work (JSON decoding in Python) is not seen by the hook: charge it by size.
    ticks = ticks + floor(bytes / 1024)
    if ticks > max_ticks then
      exceeded = true
      error("instruction budget exceeded", 0)
    end
  end

  -- dkjson.lua builds the JSON module; it gets the engine's bridge and budget, and hands back a
  -- setter for the tables Python built before the call.
  local dkjson, prebuild = make_dkjson(bridge, charge, function() return exceeded end)


  ---------------------------------------------------------------- globals
  local printed, nprinted = {}, 0

  local function safe_print(...)
    if nprinted >= max_printed then return end
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    nprinted = nprinted + 1
    printed[nprinted] = strsub(concat(parts, "\t"), 1, 1024)
  end

  local function is_binary(chunk)
    return type(chunk) == "string" and strbyte(chunk, 1) == 27
  end

  local function safe_loadstring(chunk, chunkname)
    if is_binary(chunk) then return nil, "binary chunks are not allowed" end
    return loadstring_raw(chunk, chunkname)
  end

  local function safe_load(reader, chunkname)
    if type(reader) ~= "function" then
      error("bad argument #1 to 'load' (function expected, got " .. type(reader) .. ")", 2)
    end
    local pieces = {}
    while true do
      local piece = reader()
      if piece == nil or piece == "" then break end
      if type(piece) ~= "string" then return nil, "reader function must return a string" end
      pieces[#pieces + 1] = piece
    end
    return safe_loadstring(concat(pieces), chunkname or "=(load)")
  end

  local function safe_collectgarbage(opt, ...)
    if opt == "count" then return collectgarbage_raw("count") end
    error("collectgarbage: only \"count\" is allowed in plugins", 2)
  end

  local loaded = {}
  local package = { path = "./?.lua", cpath = "", loaded = loaded, preload = {} }

  local function safe_require(name)
    if type(name) ~= "string" and type(name) ~= "number" then
      error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
    end
    name = tostring(name)
    local found = loaded[name]
    if found ~= nil then return found end
    if name == "dkjson" then
      loaded[name] = dkjson
      return dkjson
    end
    error("module '" .. name .. "' not found: only \"dkjson\" is available to plugins", 2)
  end

  -- A plugin must not swallow the end of its own run: a bound hit inside pcall, xpcall or
  -- coroutine.resume is raised again, so the call ends with that outcome.
  local function passthrough(ok, ...)
    if not ok and (exceeded or (...) == MEMORY_ERROR) then error((...), 0) end
    return ok, ...
  end
  local function fatal(e) return exceeded or e == MEMORY_ERROR end

  _G.pcall = function(f, ...) return passthrough(pcall(f, ...)) end
  _G.xpcall = function(f, handler)
    return passthrough(xpcall_raw(f, function(e)
      if fatal(e) then return e end
      return handler(e)
    end))
  end
  coroutine.resume = function(co, ...) return passthrough(resume_raw(co, ...)) end
  -- Lua 5.1 keeps the hook function per thread: a new coroutine must get it explicitly.
  coroutine.create = function(f)
    local co = create_raw(f)
    sethook(co, hook, "", hook_every)
    return co
  end
  coroutine.wrap = function(f)
    local co = coroutine.create(f)
    return function(...)
      local results = { resume_raw(co, ...) }
      if not results[1] then error(results[2], 0) end
      return select(2, unpack(results, 1, maxn(results)))
    end
  end

  for _, unsafe in pairs({ "debug", "io", "dofile", "loadfile", "module", "newproxy", "python" }) do
    rawset(_G, unsafe, nil)
  end
  rawset(string, "dump", nil)
  _G.os = { time = os_time, clock = os_clock, date = os_date }
  _G.load = safe_load
  _G.loadstring = safe_loadstring
  _G.collectgarbage = safe_collectgarbage
  _G.require = safe_require
  _G.package = package
  _G.print = safe_print
  for _, lib in pairs({ "string", "table", "math", "coroutine", "os", "_G" }) do
    loaded[lib] = _G[lib]
  end

  sethook(hook, "", hook_every)

  local function message(e)
    local kind = type(e)
    if kind == "string" then return e end
    if kind == "number" then return tostring(e) end
    return "(error object is a " .. kind .. " value)"
  end

  ---------------------------------------------------------------- install / call
  local function install(source, chunkname)
    if is_binary(source) then return nil, "binary chunks are not allowed" end
    local chunk, err = loadstring_raw(source, chunkname)
    if not chunk then return nil, err end
    ticks, exceeded = 0, false
    local ok, e = pcall(chunk)
    if exceeded then return nil, "instruction budget exceeded while loading" end
    if not ok then return nil, message(e) end
    local entry = rawget(_G, "GetWorkloadTypeAndName")
    if type(entry) ~= "function" then
      return nil, "does not define the global function GetWorkloadTypeAndName(metaJsonStr)"
    end

    local function call(meta, pre, pre_end)
      ticks, exceeded, nprinted = 0, false, 0
      prebuild(pre, meta, pre_end)
      local ok2, a, b = pcall(entry, meta)
      prebuild(nil, nil, nil)
      if exceeded then return "budget", "instruction budget exceeded" end
      if not ok2 then
        if a == MEMORY_ERROR then return "memory", a end
        return "error", message(a)
      end
      local ta, tb = type(a), type(b)
      if ta ~= "string" or tb ~= "string" then
        return "invalid", "returned " .. ta .. ", " .. tb .. " instead of two strings"
      end
      if a == "" and b == "" then return "nomatch" end
      if a == "" or b == "" then return "invalid", "returned one empty and one non-empty string" end
      if #a > max_len or #b > max_len then
        return "invalid", "returned a value longer than " .. max_len .. " bytes"
      end
      if strfind(a, "%c") or strfind(b, "%c") then
        return "invalid", "returned a value containing control characters"
      end
      return "match", a, b
    end

    local function output()
      local lines = {}
      for i = 1, nprinted do lines[i] = printed[i] end
      return concat(lines, "\n")
    end

    return call, output
  end

  return install
end
