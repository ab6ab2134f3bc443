-- Bare Pods started by an in-house scheduler carry their workload in labels instead of an
-- ownerReference: workload.acme.io/kind and workload.acme.io/name.
package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

local kinds = { web = "Deployment", db = "StatefulSet", agent = "DaemonSet" }

function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    local labels = meta and meta.labels
    if not labels then
        return "", ""
    end
    local kind = kinds[labels["workload.acme.io/kind"] or ""]
    local name = labels["workload.acme.io/name"]
    if kind and name and #name > 0 then
        return kind, name
    end
    return "", ""
end
