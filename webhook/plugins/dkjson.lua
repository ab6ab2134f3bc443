-- DeepFlow plugins' JSON module (`require("dkjson")`), built once per plugin runtime by sandbox.lua.
--
-- Our own implementation of dkjson 2.x's interface and grammar, not a copy: decode goes through the
-- engine's native bridge (Python, orjson) when the text is strict JSON and falls back to the
-- lenient Lua scanner below otherwise; encode follows dkjson's output byte for byte (the
-- differential tests against Debian's dkjson.lua pin both). Runs before the sandbox cleans the
-- globals, so the library functions it uses are captured as upvalues here.

local type, pairs, next, tostring, tonumber, select, error, pcall =
      type, pairs, next, tostring, tonumber, select, error, pcall
local setmetatable, getmetatable, rawget, rawset =
      setmetatable, getmetatable, rawget, rawset
local strfind, strsub, strbyte, strchar, strformat, strrep, strgsub, strlen =
      string.find, string.sub, string.byte, string.char, string.format, string.rep, string.gsub, string.len
local concat, maxn, unpack, floor, huge = table.concat, table.maxn, unpack, math.floor, math.huge

-- bridge(text) -> value, next position (raises on what it refuses); charge(bytes) counts native
-- work against the instruction budget; budget_exceeded() says whether the budget ran out.
return function(bridge, charge, budget_exceeded)
  ---------------------------------------------------------------- dkjson: decode
  -- Our own implementation of dkjson 2.x's grammar: lenient (comments, optional commas,
  -- any value as key), positions are byte offsets, errors are returned, not raised.
  local function location(str, where)
    local line, linestart, at = 1, 0, 1
    while true do
      at = strfind(str, "\n", at, true)
      if not at or at >= where then break end
      line, linestart, at = line + 1, at, at + 1
    end
    return "line " .. line .. ", column " .. (where - linestart)
  end

  local function unterminated(str, what, where)
    return nil, strlen(str) + 1, "unterminated " .. what .. " at " .. location(str, where)
  end

  local function skip(str, pos)
    while true do
      pos = strfind(str, "%S", pos)
      if not pos then return nil end
      local two = strsub(str, pos, pos + 1)
      if two == "\239\187" and strsub(str, pos + 2, pos + 2) == "\191" then
        pos = pos + 3
      elseif two == "//" then
        pos = strfind(str, "[\n\r]", pos + 2)
        if not pos then return nil end
      elseif two == "/*" then
        pos = strfind(str, "*/", pos + 2, true)
        if not pos then return nil end
        pos = pos + 2
      else
        return pos
      end
    end
  end

  local function utf8char(cp)
    if cp < 0x80 then return strchar(cp) end
    if cp < 0x800 then return strchar(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
    if cp < 0x10000 then
      return strchar(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return strchar(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
                   0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end

  local simple_escapes = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

  local function scan_string(str, start)
    local parts, n, pos = {}, 0, start + 1
    while true do
      local at = strfind(str, "[\"\\]", pos)
      if not at then return unterminated(str, "string", start) end
      if at > pos then
        n = n + 1; parts[n] = strsub(str, pos, at - 1)
      end
      if strbyte(str, at) == 34 then -- closing quote
        return concat(parts), at + 1
      end
      local esc = strsub(str, at + 1, at + 1)
      local piece
      if esc == "u" then
        local cp = tonumber(strsub(str, at + 2, at + 5), 16)
        if cp then
          local width = 6
          if cp >= 0xD800 and cp <= 0xDBFF and strsub(str, at + 6, at + 7) == "\\u" then
            local low = tonumber(strsub(str, at + 8, at + 11), 16)
            if low and low >= 0xDC00 and low <= 0xDFFF then
              cp = (cp - 0xD800) * 0x400 + (low - 0xDC00) + 0x10000
              width = 12
            end
          end
          if cp >= 0 and cp <= 0x10FFFF then
            piece = utf8char(cp)
            pos = at + width
          end
        end
      end
      if not piece then
        piece = simple_escapes[esc] or esc
        pos = at + 2
      end
      n = n + 1; parts[n] = piece
    end
  end

  local scan_value

  local function scan_container(kind, closer, str, start, nullval, objectmeta, arraymeta)
    local tbl, n, pos = {}, 0, start + 1
    setmetatable(tbl, kind == "object" and objectmeta or arraymeta)
    while true do
      pos = skip(str, pos)
      if not pos then return unterminated(str, kind, start) end
      if strsub(str, pos, pos) == closer then return tbl, pos + 1 end
      local first, err
      first, pos, err = scan_value(str, pos, nullval, objectmeta, arraymeta)
      if err then return nil, pos, err end
      pos = skip(str, pos)
      if not pos then return unterminated(str, kind, start) end
      local char = strsub(str, pos, pos)
      if char == ":" then
        if first == nil then
          return nil, pos, "cannot use nil as table index (at " .. location(str, pos) .. ")"
        end
        pos = skip(str, pos + 1)
        if not pos then return unterminated(str, kind, start) end
        local second
        second, pos, err = scan_value(str, pos, nullval, objectmeta, arraymeta)
        if err then return nil, pos, err end
        tbl[first] = second
        pos = skip(str, pos)
        if not pos then return unterminated(str, kind, start) end
        char = strsub(str, pos, pos)
      else
        n = n + 1
        tbl[n] = first
      end
      if char == "," then pos = pos + 1 end
    end
  end

  scan_value = function(str, pos, nullval, objectmeta, arraymeta)
    pos = skip(str, pos or 1)
    if not pos then return nil, strlen(str) + 1, "no valid JSON value (reached the end)" end
    local char = strsub(str, pos, pos)
    if char == "{" then return scan_container("object", "}", str, pos, nullval, objectmeta, arraymeta) end
    if char == "[" then return scan_container("array", "]", str, pos, nullval, objectmeta, arraymeta) end
    if char == "\"" then return scan_string(str, pos) end
    local first, last = strfind(str, "^%-?[%d%.]+[eE]?[%+%-]?%d*", pos)
    if first then
      local number = tonumber(strsub(str, first, last))
      if number then return number, last + 1 end
    end
    first, last = strfind(str, "^%a%w*", pos)
    if first then
      local word = strsub(str, first, last)
      if word == "true" then return true, last + 1 end
      if word == "false" then return false, last + 1 end
      if word == "null" then return nullval, last + 1 end
    end
    return nil, pos, "no valid JSON value at " .. location(str, pos)
  end

  -- Tables built by Python from orjson's result get their metatables here. The fast path is
  -- only taken when no array can be empty (Python checks), so an empty table is an object.
  local function set_metas(tbl, objectmeta, arraymeta)
    if type(next(tbl)) == "number" then
      setmetatable(tbl, arraymeta)
    else
      setmetatable(tbl, objectmeta)
    end
    for _, v in pairs(tbl) do
      if type(v) == "table" then set_metas(v, objectmeta, arraymeta) end
    end
  end

  local dkjson = { version = "dkjson 2.6" }

  -- The metadata's tables, built by Python before the call (the request's document is parsed
  -- once for all plugins); handed out by the first matching decode only, so a plugin that
  -- decodes twice still gets fresh tables the second time.
  local prebuilt, prebuilt_text, prebuilt_end

  function dkjson.decode(str, pos, nullval, ...)
    local objectmeta, arraymeta
    if select("#", ...) > 0 then
      objectmeta, arraymeta = ...
    else
      objectmeta, arraymeta = { __jsontype = "object" }, { __jsontype = "array" }
    end
    if type(str) == "string" and (pos == nil or pos == 1) and nullval == nil then
      charge(#str)
      local value, nextpos
      if prebuilt and str == prebuilt_text then
        value, nextpos, prebuilt = prebuilt, prebuilt_end, nil
      else
        local ok
        ok, value, nextpos = pcall(bridge, str)
        if budget_exceeded() then error("instruction budget exceeded", 0) end
        if not ok then nextpos = nil end
      end
      if nextpos then
        if type(value) == "table" and (objectmeta or arraymeta) then
          set_metas(value, objectmeta, arraymeta)
        end
        return value, nextpos
      end
    end
    return scan_value(str, pos, nullval, objectmeta, arraymeta)
  end

  ---------------------------------------------------------------- dkjson: encode
  dkjson.null = setmetatable({}, { __tojson = function() return "null" end })

  local escapes = {
    ["\""] = "\\\"", ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
    ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  }

  local function escape_char(seq)
    local known = escapes[seq]
    if known then return known end
    local a, b, c, d = strbyte(seq, 1, 4)
    a, b, c, d = a or 0, b or 0, c or 0, d or 0
    local cp
    if a < 0x80 then cp = a
    elseif a >= 0xC0 and a < 0xE0 and b >= 0x80 then cp = (a - 0xC0) * 0x40 + b - 0x80
    elseif a >= 0xE0 and a < 0xF0 and b >= 0x80 and c >= 0x80 then
      cp = ((a - 0xE0) * 0x40 + b - 0x80) * 0x40 + c - 0x80
    elseif a >= 0xF0 and a < 0xF8 and b >= 0x80 and c >= 0x80 and d >= 0x80 then
      cp = (((a - 0xF0) * 0x40 + b - 0x80) * 0x40 + c - 0x80) * 0x40 + d - 0x80
    else
      return ""
    end
    if cp < 0x10000 then return strformat("\\u%.4x", cp) end
    if cp > 0x10FFFF then return "" end
    cp = cp - 0x10000
    return strformat("\\u%.4x\\u%.4x", 0xD800 + floor(cp / 0x400), 0xDC00 + cp % 0x400)
  end

  -- Characters JavaScript parsers mishandle (Crockford's "escapable" set), escaped as dkjson does.
  local unsafe_sequences = {
    "\194[\128-\159\173]", "\216[\128-\132]", "\220\143", "\225\158[\180\181]",
    "\226\128[\140-\143\168-\175]", "\226\129[\160-\175]", "\239\187\191", "\239\191[\176-\191]",
  }

  local function quote(s)
    if strfind(s, "[%z\1-\31\"\\\127]") then s = strgsub(s, "[%z\1-\31\"\\\127]", escape_char) end
    if strfind(s, "[\194\216\220\225\226\239]") then
      for i = 1, #unsafe_sequences do
        if strfind(s, unsafe_sequences[i]) then s = strgsub(s, unsafe_sequences[i], escape_char) end
      end
    end
    return "\"" .. s .. "\""
  end
  dkjson.quotestring = quote

  local function array_length(tbl)
    local max, count, declared = 0, 0, 0
    for k, v in pairs(tbl) do
      if k == "n" and type(v) == "number" then
        declared = v
        if v > max then max = v end
      else
        if type(k) ~= "number" or k < 1 or floor(k) ~= k then return nil end
        if k > max then max = k end
        count = count + 1
      end
    end
    if max > 10 and max > declared and max > count * 2 then return nil end
    return max
  end

  local function fail(state, reason, value, default)
    local handler = state.exception
    if not handler then return nil, default or reason end
    local ret, msg = handler(reason, value, state, default or reason)
    if not ret then return nil, msg or default or reason end
    return ret
  end

  local encode_value

  local function newline(out, level)
    out[#out + 1] = "\n" .. strrep("  ", level)
  end

  local function encode_table(value, meta, out, indent, level, seen, order, state)
    local n = array_length(value)
    if n == 0 and meta and meta.__jsontype == "object" then n = nil end
    if n then
      out[#out + 1] = "["
      for i = 1, n do
        local ok, err = encode_value(value[i], out, indent, level, seen, order, state)
        if not ok then return nil, err end
        if i < n then out[#out + 1] = "," end
      end
      out[#out + 1] = "]"
      return true
    end
    out[#out + 1] = "{"
    local first, used = true, {}
    local function pair(k, v)
      local kt = type(k)
      if kt ~= "string" and kt ~= "number" then
        return nil, "type '" .. kt .. "' is not supported as a key by JSON."
      end
      if not first then out[#out + 1] = "," end
      if indent then newline(out, level) end
      first = false
      out[#out + 1] = quote(kt == "number" and tostring(k) or k)
      out[#out + 1] = ":"
      return encode_value(v, out, indent, level, seen, order, state)
    end
    local keyorder = (meta and meta.__jsonorder) or order
    if keyorder then
      for i = 1, #keyorder do
        local k = keyorder[i]
        local v = value[k]
        if v ~= nil then
          used[k] = true
          local ok, err = pair(k, v)
          if not ok then return nil, err end
        end
      end
    end
    for k, v in pairs(value) do
      if not used[k] then
        local ok, err = pair(k, v)
        if not ok then return nil, err end
      end
    end
    if indent then newline(out, level - 1) end
    out[#out + 1] = "}"
    return true
  end

  encode_value = function(value, out, indent, level, seen, order, state)
    local kind = type(value)
    local meta = getmetatable(value)
    meta = type(meta) == "table" and meta or nil
    if meta and meta.__tojson then
      if seen[value] then return fail(state, "reference cycle", value) end
      seen[value] = true
      local ret, msg = meta.__tojson(value, state)
      seen[value] = nil
      if not ret then return fail(state, "custom encoder failed", value, msg) end
      if type(ret) == "string" then out[#out + 1] = ret end
      return true
    elseif value == nil then
      out[#out + 1] = "null"
    elseif kind == "number" then
      if value ~= value or value >= huge or -value >= huge then
        out[#out + 1] = "null"
      else
        out[#out + 1] = tostring(value)
      end
    elseif kind == "boolean" then
      out[#out + 1] = value and "true" or "false"
    elseif kind == "string" then
      out[#out + 1] = quote(value)
    elseif kind == "table" then
      if seen[value] then return fail(state, "reference cycle", value) end
      seen[value] = true
      local ok, err = encode_table(value, meta, out, indent, level + 1, seen, order, state)
      seen[value] = nil
      if not ok then return nil, err end
    else
      local ret, msg = fail(state, "unsupported type", value, "type '" .. kind .. "' is not supported by JSON.")
      if not ret then return nil, msg end
      if type(ret) == "string" then out[#out + 1] = ret end
    end
    return true
  end

  function dkjson.encode(value, state)
    state = state or {}
    local out = {}
    local ok, err = encode_value(value, out, state.indent, state.level or 0, state.tables or {},
                                 state.keyorder, state)
    if not ok then error(err, 2) end
    return concat(out)
  end

  function dkjson.encodeexception(reason, value, state, defaultmessage)
    return quote("<" .. defaultmessage .. ">")
  end

  function dkjson.use_lpeg() return dkjson end

  local function prebuild(tables, text, text_end)
    prebuilt, prebuilt_text, prebuilt_end = tables, text, text_end
  end

  return dkjson, prebuild
end
