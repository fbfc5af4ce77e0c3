-- Linear, Identity, Flatten, Embedding.
local T = require 'tdrl'
local class = require 'tdrl.class'
local Module = require('tdrl.nn.module').Module
local init = require 'tdrl.nn.initializers'
local F = require 'tdrl.nn.functional'
local U = require 'tdrl.nn.layers.util'

local M = {}

--- Linear(in_features, out_features [, bias = true] [, {bias=, generator=}])
--- weight (out, in) ~ U(+-1/sqrt(in)) (kaiming_uniform a = sqrt 5), bias ~ U(+-1/sqrt(in))
local Linear = class('Linear', Module)
M.Linear = Linear

function Linear:__init(in_features, out_features, ...)
  Module.__init(self)
  local o = U.args({"bias", layer = "Linear"}, ...)
  assert(math.type(in_features) == "integer" and in_features >= 0, "Linear: in_features must be an integer")
  assert(math.type(out_features) == "integer" and out_features >= 0, "Linear: out_features must be an integer")
  self.in_features, self.out_features = in_features, out_features
  self:register_parameter("weight", T.empty(out_features, in_features))
  self:register_parameter("bias", o.bias ~= false and T.empty(out_features) or nil)
  self:reset_parameters(o.generator)
end

function Linear:reset_parameters(gen)
  init.default_weight_(self.weight, gen)
  if self.bias then init.default_bias_(self.bias, self.weight, gen) end
end

function Linear:extra_repr()
  return string.format("%d -> %d%s", self.in_features, self.out_features, self.bias and "" or ", no bias")
end

function Linear:forward(x)
  if x:dim() < 1 or x:size(-1) ~= self.in_features then
    U.fail(self, "input of shape %s: the last dimension must be %d", U.shape(x), self.in_features)
  end
  return F.linear(x, self.weight, self.bias)
end

--- Identity(): returns its input
local Identity = class('Identity', Module)
M.Identity = Identity
function Identity:forward(x) return x end

--- Flatten(start_dim = 2, end_dim = -1)
local Flatten = class('Flatten', Module)
M.Flatten = Flatten
function Flatten:__init(s, e)
  Module.__init(self)
  self.start_dim, self.end_dim = s or 2, e or -1
end
function Flatten:extra_repr() return string.format("%d, %d", self.start_dim, self.end_dim) end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end

--- Embedding(num_embeddings, embedding_dim [, padding_idx] [, {padding_idx=, generator=}]): weight ~ N(0, 1);
--- forward(idx int64 of any shape, values from 0) -> (idx shape..., dim). The row padding_idx
--- (from 0; negative counts from the end) starts at zero and gets no gradient, as in PyTorch.
local Embedding = class('Embedding', Module)
M.Embedding = Embedding

function Embedding:__init(num, dim, ...)
  Module.__init(self)
  local o = U.args({"padding_idx", layer = "Embedding"}, ...)
  U.check_ints("Embedding", "num_embeddings", num, "embedding_dim", dim)
  self.num_embeddings, self.embedding_dim = num, dim
  local pad = o.padding_idx
  if pad ~= nil then
    if pad < 0 then pad = pad + num end
    if pad < 0 or pad >= num then error(string.format("Embedding: padding_idx must be within the %d rows", num), 2) end
    self.padding_idx = pad
  end
  self:register_parameter("weight", T.empty(num, dim))
  init.normal_(self.weight, {mean = 0, std = 1, generator = o.generator})
  if pad ~= nil then T.no_grad(function() self.weight[pad + 1]:zero_() end) end
end

function Embedding:extra_repr()
  local s = string.format("%d, %d", self.num_embeddings, self.embedding_dim)
  if self.padding_idx then s = s .. ", padding_idx=" .. self.padding_idx end
  return s
end

-- the weight with its padding row cut off from the graph
local function padded_weight(w, pad)
  local n = w:size(1)
  local parts = {}
  if pad > 0 then parts[#parts + 1] = w:narrow(1, 1, pad) end
  parts[#parts + 1] = w:narrow(1, pad + 1, 1):detach()
  if pad < n - 1 then parts[#parts + 1] = w:narrow(1, pad + 2, n - pad - 1) end
  return T.cat(parts, 1)
end

function Embedding:forward(idx)
  if not T.is_tensor(idx) or idx:type() ~= "int64" then
    U.fail(self, "indices must be an int64 tensor (values from 0), got %s",
      T.is_tensor(idx) and idx:type() .. " of shape " .. U.shape(idx) or type(idx))
  end
  local w = self.weight
  if self.padding_idx and w.requires_grad and T.is_grad_enabled() then w = padded_weight(w, self.padding_idx) end
  local ok, r = pcall(F.embedding, idx, w)
  if not ok then U.fail(self, "%s", tostring(r)) end
  return r
end

return M
