-- DeepFlow documentation example: Pods of an openGauss cluster (owner kind OpenGaussCluster)
-- belong to a StatefulSet named after the cluster. Runs unchanged on DeepFlow's server and here.
package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
    local meta, pos, err = dkjson.decode(metaJsonStr, 1, nil)
    if err then
        return "", ""
    end
    local ownerReferences = meta["ownerReferences"]
    if ownerReferences == nil then
        return "", ""
    end
    for _, owner in ipairs(ownerReferences) do
        if owner["kind"] == "OpenGaussCluster" then
            return "statefulset", owner["name"]
        end
    end
    return "", ""
end
