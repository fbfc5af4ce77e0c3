/* Lua bindings of the fused NN kernels (ops/nn.h), as module functions:
 *   T.conv2d(x, w, b, {stride=, padding=, dilation=, groups=})      numbers or {h, w} pairs; b (O) or
 *       one per image (N, O); {residual = r, scale = s}: s (conv + b + r) in the output pass
 *   T.conv_transpose2d(x, w, b, {stride=, padding=, output_padding=, dilation=})
 *   T.avg_pool2d(x, kernel [, stride])   T.upsample_nearest2d(x, scale)
 *   T.group_norm(x, groups [, weight, bias, eps])   T.group_norm_silu(... [, p, generator])  (eps 1e-5;
 *       p > 0: dropout(silu(group_norm(x)), p) in the same passes, T.dropout's mask)
 *   T.add_scaled(a, b, s)   (a + b) * s in one pass (the residual tails (x + h) / sqrt 2)
 *   T.batch_norm(x, running_mean, running_var [, weight, bias, training, momentum, eps])   T.batch_norm_relu(...)
 *   T.layer_norm(x, n_last_dims | shape [, weight, bias, eps])
 *   out, weights = T.scaled_dot_product_attention(q, k, v [, {attn_mask=, key_padding_mask=,
 *                                                  scale=, bool_mask=, key_padding_additive=,
 *                                                  channels_first=}])
 *       masks: an int64 attn_mask, or a float one with bool_mask = true, masks where nonzero; a
 *       float attn_mask is otherwise added to the scores. key_padding_mask (B,Tk): nonzero =
 *       masked, or added when key_padding_additive = true. weights (...,Tq,Tk) are differentiable.
 *   T.gru_cell(x, h, w_ih, w_hh [, b_ih, b_hh])
 *   T.linear(x, w [, b])   x (..., in), w (out, in) -> (..., out)
 *   T.dropout(x, p [, generator])   the mask is recomputed in backward, never stored
 *   T.cross_entropy(logits, labels [, reduction | {reduction=}])   T.nll_loss(logp, labels, ...)
 *   T.binary_cross_entropy_with_logits(x, target [, reduction | {reduction=, pos_weight=}])   T.mse_loss(a, b, ...)   T.l1_loss(a, b, ...)
 *   T.gaussian_kl(mu, logvar, ...)                       reduction: 'mean' (default), 'sum', 'none'
 * nil stands for an absent optional tensor. Errors name the op and the shapes. */
#include <math.h>
#include <string.h>

#include "../ops/nn.h"
#include "bind.h"

/* an optional tensor argument: nil/none -> NULL, a tensor, or an error naming the op */
static td_tensor *opt_tensor(lua_State *L, int idx, const char *op, const char *what) {
    if (lua_isnoneornil(L, idx)) return NULL;
    td_tensor *t = tdl_opt_tensor(L, idx);
    if (!t) luaL_error(L, "%s: %s must be a tensor or nil, got %s", op, what, luaL_typename(L, idx));
    return tdl_check_tensor(L, idx);
}

static td_tensor *req_tensor(lua_State *L, int idx, const char *op, const char *what) {
    td_tensor *t = tdl_opt_tensor(L, idx);
    if (!t) luaL_error(L, "%s: %s must be a tensor, got %s", op, what, luaL_typename(L, idx));
    return tdl_check_tensor(L, idx);
}

/* value at idx: a number n -> (n, n); a table {h, w} -> (h, w); nil -> def (returns false) */
static bool get_pair(lua_State *L, int idx, const char *op, const char *what, int64_t out[2]) {
    if (lua_isnoneornil(L, idx)) return false;
    if (lua_isinteger(L, idx) || (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == floor(lua_tonumber(L, idx)))) {
        out[0] = out[1] = (int64_t)lua_tonumber(L, idx);
        return true;
    }
    if (lua_istable(L, idx) && lua_rawlen(L, idx) == 2) {
        for (int i = 0; i < 2; i++) {
            lua_rawgeti(L, idx, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) != floor(lua_tonumber(L, -1)))
                luaL_error(L, "%s: %s must be an integer or a pair {h, w} of integers", op, what);
            out[i] = (int64_t)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        return true;
    }
    return luaL_error(L, "%s: %s must be an integer or a pair {h, w} of integers, got %s", op, what, luaL_typename(L, idx));
}

static void field_pair(lua_State *L, int opts, const char *op, const char *name, int64_t out[2]) {
    lua_getfield(L, opts, name);
    get_pair(L, lua_gettop(L), op, name, out);
    lua_pop(L, 1);
}

/* checks that the option table at idx has only the given keys (a typo must not pass silently) */
static void check_keys(lua_State *L, int idx, const char *op, const char *const *keys) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; keys[i] && !ok; i++) ok = strcmp(lua_tostring(L, -1), keys[i]) == 0;
        if (!ok) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; keys[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, keys[i]);
            }
            luaL_pushresult(&b);
            const char *known = lua_tostring(L, -1);
            const char *name = luaL_tolstring(L, -2, NULL);
            luaL_error(L, "%s: unknown option '%s' (known: %s)", op, name, known);
        }
    }
}

static void conv_opts_arg(lua_State *L, int idx, const char *op, td_conv_opts *o, bool transposed) {
    td_conv_opts_default(o);
    if (lua_isnoneornil(L, idx)) return;
    luaL_argexpected(L, lua_istable(L, idx), idx, "option table");
    static const char *const keys[] = {"stride", "padding", "dilation", "groups", "residual", "scale", NULL};
    static const char *const tkeys[] = {"stride", "padding", "dilation", "groups", "output_padding", NULL};
    check_keys(L, idx, op, transposed ? tkeys : keys);
    field_pair(L, idx, op, "stride", o->stride);
    field_pair(L, idx, op, "padding", o->padding);
    field_pair(L, idx, op, "dilation", o->dilation);
    if (transposed) field_pair(L, idx, op, "output_padding", o->output_padding);
    lua_getfield(L, idx, "groups");
    if (!lua_isnil(L, -1)) o->groups = (int64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (transposed) return;
    lua_getfield(L, idx, "residual"); /* the tensor stays referenced by the option table */
    if (!lua_isnil(L, -1)) o->residual = tdl_check_tensor(L, -1);
    lua_getfield(L, idx, "scale");
    if (!lua_isnil(L, -1)) o->scale = luaL_checknumber(L, -1);
    lua_pop(L, 2);
}

static int l_conv2d(lua_State *L) {
    const char *op = "conv2d";
    td_tensor *x = req_tensor(L, 1, op, "input"), *w = req_tensor(L, 2, op, "weight"), *b = opt_tensor(L, 3, op, "bias");
    td_conv_opts o;
    conv_opts_arg(L, 4, op, &o, false);
    return tdl_push_tensor(L, td_conv2d(x, w, b, &o));
}

static int l_conv_transpose2d(lua_State *L) {
    const char *op = "conv_transpose2d";
    td_tensor *x = req_tensor(L, 1, op, "input"), *w = req_tensor(L, 2, op, "weight"), *b = opt_tensor(L, 3, op, "bias");
    td_conv_opts o;
    conv_opts_arg(L, 4, op, &o, true);
    return tdl_push_tensor(L, td_conv_transpose2d(x, w, b, &o));
}

static int l_avg_pool2d(lua_State *L) {
    const char *op = "avg_pool2d";
    td_tensor *x = req_tensor(L, 1, op, "input");
    int64_t k[2], s[2];
    if (!get_pair(L, 2, op, "kernel", k)) return luaL_error(L, "%s: kernel size missing", op);
    bool has_s = get_pair(L, 3, op, "stride", s);
    return tdl_push_tensor(L, td_avg_pool2d(x, k, has_s ? s : NULL));
}

static int l_upsample_nearest2d(lua_State *L) {
    const char *op = "upsample_nearest2d";
    td_tensor *x = req_tensor(L, 1, op, "input");
    int64_t s[2];
    if (!get_pair(L, 2, op, "scale", s)) return luaL_error(L, "%s: scale missing", op);
    return tdl_push_tensor(L, td_upsample_nearest2d(x, s[0], s[1]));
}

static int group_norm_impl(lua_State *L, bool silu) {
    const char *op = silu ? "group_norm_silu" : "group_norm";
    td_tensor *x = req_tensor(L, 1, op, "input");
    lua_Integer g = luaL_checkinteger(L, 2);
    td_tensor *w = opt_tensor(L, 3, op, "weight"), *b = opt_tensor(L, 4, op, "bias");
    double eps = luaL_optnumber(L, 5, 1e-5), p = silu ? luaL_optnumber(L, 6, 0) : 0;
    if (p != 0) /* T.group_norm_silu(x, groups, w, b, eps, p [, generator]): then dropout, fused */
        return tdl_push_tensor(L, td_group_norm_silu_dropout(x, (int64_t)g, w, b, eps, p, tdl_opt_generator(L, 7)));
    return tdl_push_tensor(L, td_group_norm(x, (int64_t)g, w, b, eps, silu));
}
static int l_group_norm(lua_State *L) { return group_norm_impl(L, false); }
static int l_add_scaled(lua_State *L) {
    td_tensor *a = req_tensor(L, 1, "add_scaled", "a"), *b = req_tensor(L, 2, "add_scaled", "b");
    return tdl_push_tensor(L, td_add_scaled(a, b, luaL_checknumber(L, 3)));
}
static int l_group_norm_silu(lua_State *L) { return group_norm_impl(L, true); }

static int batch_norm_impl(lua_State *L, bool relu) {
    const char *op = relu ? "batch_norm_relu" : "batch_norm";
    td_tensor *x = req_tensor(L, 1, op, "input"), *rm = opt_tensor(L, 2, op, "running_mean");
    td_tensor *rv = opt_tensor(L, 3, op, "running_var"), *w = opt_tensor(L, 4, op, "weight"), *b = opt_tensor(L, 5, op, "bias");
    bool training = lua_toboolean(L, 6);
    double momentum = luaL_optnumber(L, 7, 0.1), eps = luaL_optnumber(L, 8, 1e-5);
    return tdl_push_tensor(L, td_batch_norm(x, rm, rv, w, b, training, momentum, eps, relu));
}
static int l_batch_norm(lua_State *L) { return batch_norm_impl(L, false); }
static int l_batch_norm_relu(lua_State *L) { return batch_norm_impl(L, true); }

static int l_layer_norm(lua_State *L) {
    const char *op = "layer_norm";
    td_tensor *x = req_tensor(L, 1, op, "input");
    int nd;
    if (lua_istable(L, 2)) { /* a normalized_shape as in PyTorch: must equal the last dims */
        nd = (int)lua_rawlen(L, 2);
        for (int i = 0; i < nd; i++) {
            lua_rawgeti(L, 2, i + 1);
            lua_Integer v = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
            if (nd > x->ndim || x->shape[x->ndim - nd + i] != v) {
                char b1[TD_SHAPE_BUF];
                return luaL_error(L, "%s: normalized shape does not match the last %d dims of input (%s)", op, nd,
                                  td_shape_str(x, b1, sizeof b1));
            }
        }
    } else {
        nd = (int)luaL_checkinteger(L, 2);
    }
    td_tensor *w = opt_tensor(L, 3, op, "weight"), *b = opt_tensor(L, 4, op, "bias");
    double eps = luaL_optnumber(L, 5, 1e-5);
    return tdl_push_tensor(L, td_layer_norm(x, nd, w, b, eps));
}

static int l_sdpa(lua_State *L) {
    const char *op = "scaled_dot_product_attention";
    td_tensor *q = req_tensor(L, 1, op, "q"), *k = req_tensor(L, 2, op, "k"), *v = req_tensor(L, 3, op, "v");
    td_sdpa_opts o = {NULL, false, NULL, false, NAN, false};
    if (!lua_isnoneornil(L, 4)) {
        luaL_argexpected(L, lua_istable(L, 4), 4, "option table");
        static const char *const keys[] = {"attn_mask", "key_padding_mask", "scale", "bool_mask", "key_padding_additive",
                                           "channels_first", NULL};
        check_keys(L, 4, op, keys);
        int top = lua_gettop(L);
        lua_getfield(L, 4, "attn_mask"); /* the masks stay on the stack until return */
        o.attn_mask = opt_tensor(L, top + 1, op, "attn_mask");
        lua_getfield(L, 4, "key_padding_mask");
        o.key_padding_mask = opt_tensor(L, top + 2, op, "key_padding_mask");
        lua_getfield(L, 4, "scale");
        if (!lua_isnil(L, -1)) o.scale = luaL_checknumber(L, -1);
        lua_getfield(L, 4, "bool_mask");
        o.bool_mask = lua_toboolean(L, -1);
        lua_getfield(L, 4, "key_padding_additive");
        o.key_padding_additive = lua_toboolean(L, -1);
        lua_getfield(L, 4, "channels_first");
        o.channels_first = lua_toboolean(L, -1);
        lua_pop(L, 4);
    }
    td_tensor *wts = NULL, *out = td_sdpa(q, k, v, &o, &wts);
    if (!out) return tdl_error(L);
    tdl_push_tensor(L, out);
    tdl_push_tensor(L, wts);
    return 2;
}

static int l_gru_cell(lua_State *L) {
    const char *op = "gru_cell";
    td_tensor *x = req_tensor(L, 1, op, "x"), *h = req_tensor(L, 2, op, "h"), *wih = req_tensor(L, 3, op, "w_ih");
    td_tensor *whh = req_tensor(L, 4, op, "w_hh"), *bih = opt_tensor(L, 5, op, "b_ih"), *bhh = opt_tensor(L, 6, op, "b_hh");
    return tdl_push_tensor(L, td_gru_cell(x, h, wih, whh, bih, bhh));
}

/* reduction argument: nil -> mean, a string, or a table {reduction = ...[, pos_weight = ...]} */
static td_reduction reduction_arg(lua_State *L, int idx, const char *op, bool pos_weight_ok) {
    const char *s = NULL;
    if (lua_isnoneornil(L, idx)) return TD_REDUCE_MEAN;
    if (lua_istable(L, idx)) {
        static const char *const keys[] = {"reduction", NULL}, *const pkeys[] = {"reduction", "pos_weight", NULL};
        check_keys(L, idx, op, pos_weight_ok ? pkeys : keys);
        lua_getfield(L, idx, "reduction");
        s = lua_isnil(L, -1) ? "mean" : lua_tostring(L, -1);
        lua_pop(L, 1);
    } else {
        s = lua_tostring(L, idx);
    }
    int r = td_reduction_parse(s);
    if (r < 0) luaL_error(L, "%s: reduction must be 'mean', 'sum' or 'none', got %s", op, s ? s : luaL_typename(L, idx));
    return (td_reduction)r;
}

typedef td_tensor *(*loss2_fn)(td_tensor *, td_tensor *, td_reduction);
static int loss2(lua_State *L, const char *op, const char *a, const char *b, loss2_fn fn) {
    td_tensor *x = req_tensor(L, 1, op, a), *y = req_tensor(L, 2, op, b);
    td_reduction r = reduction_arg(L, 3, op, false);
    return tdl_push_tensor(L, fn(x, y, r));
}
static int l_cross_entropy(lua_State *L) { return loss2(L, "cross_entropy", "scores", "labels", td_cross_entropy); }
static int l_nll_loss(lua_State *L) { return loss2(L, "nll_loss", "input", "labels", td_nll_loss); }
static int l_mse_loss(lua_State *L) { return loss2(L, "mse_loss", "input", "target", td_mse_loss); }
static int l_l1_loss(lua_State *L) { return loss2(L, "l1_loss", "input", "target", td_l1_loss); }
static int l_gaussian_kl(lua_State *L) { return loss2(L, "gaussian_kl", "mu", "logvar", td_gaussian_kl); }

static int l_bce_logits(lua_State *L) {
    const char *op = "binary_cross_entropy_with_logits";
    td_tensor *x = req_tensor(L, 1, op, "input"), *y = req_tensor(L, 2, op, "target"), *pw = NULL, *owned = NULL;
    td_reduction r = reduction_arg(L, 3, op, true);
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "pos_weight");
        if (lua_type(L, -1) == LUA_TNUMBER) pw = owned = td_full(TD_F32, 1, (int64_t[]){1}, lua_tonumber(L, -1));
        else if (!lua_isnil(L, -1)) pw = req_tensor(L, lua_gettop(L), op, "pos_weight");
    }
    td_tensor *out = td_bce_with_logits(x, y, pw, r);
    td_release(owned);
    return tdl_push_tensor(L, out);
}

static int l_linear(lua_State *L) {
    td_tensor *x = req_tensor(L, 1, "linear", "input"), *w = req_tensor(L, 2, "linear", "weight");
    return tdl_push_tensor(L, td_linear(x, w, opt_tensor(L, 3, "linear", "bias")));
}

static int l_dropout(lua_State *L) {
    td_tensor *x = req_tensor(L, 1, "dropout", "input");
    return tdl_push_tensor(L, td_dropout(x, luaL_checknumber(L, 2), tdl_opt_generator(L, 3)));
}

static int l_nn_scratch_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)td_nn_scratch_bytes());
    return 1;
}

void tdl_register_nn(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"conv2d", l_conv2d}, {"conv_transpose2d", l_conv_transpose2d}, {"avg_pool2d", l_avg_pool2d},
        {"upsample_nearest2d", l_upsample_nearest2d}, {"group_norm", l_group_norm}, {"group_norm_silu", l_group_norm_silu}, {"add_scaled", l_add_scaled},
        {"batch_norm", l_batch_norm}, {"batch_norm_relu", l_batch_norm_relu}, {"layer_norm", l_layer_norm}, {"scaled_dot_product_attention", l_sdpa},
        {"gru_cell", l_gru_cell}, {"cross_entropy", l_cross_entropy}, {"nll_loss", l_nll_loss},
        {"binary_cross_entropy_with_logits", l_bce_logits}, {"mse_loss", l_mse_loss}, {"l1_loss", l_l1_loss},
        {"gaussian_kl", l_gaussian_kl}, {"linear", l_linear}, {"dropout", l_dropout}, {"nn_scratch_bytes", l_nn_scratch_bytes}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
