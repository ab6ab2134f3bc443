package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta, pos, err = dkjson.decode(metaJsonStr, 1, nil)
  local mt = getmetatable(meta)
  local owners = meta.ownerReferences
  local parts = { mt and mt.__jsontype or "none", tostring(pos), tostring(err) }
  if owners then
    parts[#parts + 1] = getmetatable(owners).__jsontype
    parts[#parts + 1] = dkjson.encode(owners[1], { keyorder = { "kind", "name", "controller" } })
  end
  if meta.labels then
    parts[#parts + 1] = dkjson.encode({ n = 0, x = meta.labels.app })
    local empty = next(meta.labels) == nil
    parts[#parts + 1] = empty and dkjson.encode(meta.labels) or "labels"
  end
  parts[#parts + 1] = dkjson.encode({ 1, 2, "three", true, false, dkjson.null })
  return "Custom", table.concat(parts, ";")
end
