-- tdrl: the tensor core (C, bound as 'tdrl.core') plus small Lua-level helpers.
-- Sets no globals; `local T = require 'tdrl'`.
local T = require 'tdrl.core'

T.version = "0.1.0"

local Tensor_mt = debug.getregistry()["tdrl.Tensor"]

--- true when v is a tensor
function T.is_tensor(v)
  return getmetatable(v) == Tensor_mt
end

return T
