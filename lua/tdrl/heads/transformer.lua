-- The paper's Transformer head: Linear(latent, 256) + dropout; sinusoidal positions by token
-- index (not by t); a learned CLS vector (Xavier-uniform) appended LAST, without position;
-- one post-LN block (4 heads x 64, FFN 512, dropout 0.25, no attention dropout) applied
-- `applications` times with shared weights (2 in the classifier); Linear(256, C) on CLS.
-- The analysis variant (applications = 1, mask_cls_key = true) lets CLS attend to the time
-- tokens only and returns the attention weights: that is the attention profile of section 3.3.
--   TransformerHead(latent, classes, {d_model = 256, heads = 4, ff = 512, dropout = 0.25,
--                                     applications = 2, mask_cls_key = false})
--   forward(x (B, P, latent), times (P) [, {need_weights = true, mask = (B, P) 1 = hidden}])
--     -> logits (B, C) [, CLS attention over the P time tokens (B, heads, P)]
local T = require 'tdrl'
local nn = require 'tdrl.nn'

local TransformerHead = nn.class('TransformerHead', nn.Module)

function TransformerHead:__init(latent, classes, o)
  nn.Module.__init(self)
  o = o or {}
  local g = {generator = o.generator}
  local d = o.d_model or 256
  self.d_model, self.heads = d, o.heads or 4
  self.applications = o.applications or 2
  self.mask_cls_key = o.mask_cls_key or false
  self.proj = nn.Linear(latent, d, g)
  self.drop = nn.Dropout(o.dropout or 0.25, g)
  self:register_buffer("pe", nn.sinusoidal_encoding(o.max_points or 512, d), false)
  self.cls = nn.Parameter(T.empty(1, 1, d))
  nn.init.xavier_uniform_(self.cls, {generator = o.generator})
  self.block = nn.TransformerEncoderLayer(d, self.heads, {dim_feedforward = o.ff or 512, dropout = o.dropout or 0.25,
    batch_first = true, generator = o.generator})
  self.block.self_attn.dropout = 0 -- the reference has no attention dropout
  self.out = nn.Linear(d, classes, g)
end

function TransformerHead:forward(x, times, o)
  o = o or {}
  local B, P = x:size(1), x:size(2)
  local h = self.drop(self.proj(x)) + self.pe:narrow(1, 1, P)
  h = T.cat({h, self.cls:expand(B, 1, self.d_model)}, 2) -- CLS last: (B, P + 1, d)
  local kpm
  if self.mask_cls_key or o.mask then
    kpm = T.zeros({B, P + 1}, "int64") -- a boolean mask (a float one would be added to the scores)
    if self.mask_cls_key then kpm[{{}, P + 1}] = 1 end
    if o.mask then kpm[{{}, {1, P}}] = o.mask end
  end
  local w
  -- only CLS is read: the last application computes its row alone (last_rows), h (B, 1, d)
  h, w = self.block(h, {src_key_padding_mask = kpm, n_apply = self.applications, need_weights = true,
    average_attn_weights = false, last_rows = 1})
  local logits = self.out(h:select(2, 1))
  if o.need_weights then
    -- the CLS query's weights over the time tokens: (B, heads, P)
    return logits, w:select(3, 1):narrow(3, 1, P)
  end
  return logits
end

return TransformerHead
