/* Lua binding of the optimiser kernels (ops/optim.c). One call updates a whole list of
 * parameters; gradients are read from each parameter's .grad (or from a parallel list), and a
 * parameter without a gradient is skipped, as in PyTorch. State lives in Lua tables of lists
 * (state.exp_avg[i], ...), created here on a parameter's first update:
 *
 *   T._sgd_step(params, grads|nil, state, lr, momentum, dampening, weight_decay, nesterov, maximize[, ref])
 *   T._adam_step(params, grads|nil, state, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
 *                amsgrad[, ref])                      -> number of parameters updated
 *   T.grad_norm(params[, norm_type = 2])              -> norm of all the gradients together
 *   T.tensors_norm(tensors)                           -> L2 norm of the tensors together
 *   T.clip_grad_norm_(params, max_norm[, norm_type])  -> total norm before clipping
 *   T._ema_update(shadows, params, decay)
 * `ref` selects the reference loops (tests only). */
#include <math.h>
#include <string.h>

#include "bind.h"


/* Entry i of the list at idx as a tensor (NULL when nil); raises on another type. */
static td_tensor *list_tensor(lua_State *L, int idx, lua_Integer i, const char *op, const char *what) {
    int ty = lua_rawgeti(L, idx, i);
    td_tensor *t = NULL;
    if (ty != LUA_TNIL) {
        t = tdl_opt_tensor(L, -1);
        if (!t) luaL_error(L, "%s: %s %d is a %s, not a tensor", op, what, (int)i, luaL_typename(L, -1));
    }
    lua_pop(L, 1); /* the list keeps the userdata alive */
    return t;
}

/* The gradient of parameter i: grads[i] when a list is given, else p.grad. */
static td_tensor *grad_of(lua_State *L, int grads_idx, lua_Integer i, td_tensor *p, const char *op) {
    if (grads_idx) return list_tensor(L, grads_idx, i, op, "gradient");
    return p->grad;
}

/* state[field] as a list on the stack (created when absent); returns its index. */
static int state_list(lua_State *L, int state_idx, const char *field) {
    if (lua_getfield(L, state_idx, field) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, state_idx, field);
    }
    return lua_gettop(L);
}

/* list[i], created as zeros shaped like p when absent; *fresh tells which. */
static td_tensor *state_tensor(lua_State *L, int list_idx, lua_Integer i, td_tensor *p, const char *op,
                               const char *what, bool *fresh) {
    td_tensor *t = list_tensor(L, list_idx, i, op, what);
    if (fresh) *fresh = false;
    if (t) return t;
    t = td_zeros(TD_F32, p->ndim, p->shape);
    tdl_push_tensor(L, t); /* raises on failure */
    lua_rawseti(L, list_idx, i);
    if (fresh) *fresh = true;
    return t;
}

static void check_list(lua_State *L, int idx, const char *op, const char *what) {
    if (!lua_istable(L, idx)) luaL_error(L, "%s: %s must be a list, got %s", op, what, luaL_typename(L, idx));
}

static int l_sgd_step(lua_State *L) {
    const char *op = "sgd";
    check_list(L, 1, op, "params");
    int grads = lua_isnoneornil(L, 2) ? 0 : 2;
    if (grads) check_list(L, 2, op, "grads");
    luaL_checktype(L, 3, LUA_TTABLE);
    double lr = luaL_checknumber(L, 4), momentum = luaL_checknumber(L, 5), dampening = luaL_checknumber(L, 6);
    double wd = luaL_checknumber(L, 7);
    bool nesterov = lua_toboolean(L, 8), maximize = lua_toboolean(L, 9), ref = lua_toboolean(L, 10);
    int bufs = momentum != 0 ? state_list(L, 3, "momentum_buffer") : 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1), done = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        td_tensor *p = list_tensor(L, 1, i, op, "parameter");
        if (!p) continue;
        td_tensor *g = grad_of(L, grads, i, p, op);
        if (!g) continue;
        bool first = false;
        td_tensor *buf = bufs ? state_tensor(L, bufs, i, p, op, "momentum buffer", &first) : NULL;
        int rc = (ref ? td_sgd_update_ref : td_sgd_update_)(p, g, buf, first, lr, momentum, dampening, wd, nesterov,
                                                             maximize);
        if (rc) return luaL_error(L, "%s (parameter %d): %s", op, (int)i, td_last_error());
        done++;
    }
    lua_pushinteger(L, done);
    return 1;
}

static int l_adam_step(lua_State *L) {
    bool decoupled = lua_toboolean(L, 9);
    const char *op = decoupled ? "adamw" : "adam";
    check_list(L, 1, op, "params");
    int grads = lua_isnoneornil(L, 2) ? 0 : 2;
    if (grads) check_list(L, 2, op, "grads");
    luaL_checktype(L, 3, LUA_TTABLE);
    double lr = luaL_checknumber(L, 4), b1 = luaL_checknumber(L, 5), b2 = luaL_checknumber(L, 6);
    double eps = luaL_checknumber(L, 7), wd = luaL_checknumber(L, 8);
    bool maximize = lua_toboolean(L, 10), amsgrad = lua_toboolean(L, 11), ref = lua_toboolean(L, 12);
    if (b1 < 0 || b1 >= 1 || b2 < 0 || b2 >= 1)
        return luaL_error(L, "%s: betas must be in [0, 1), got (%f, %f)", op, b1, b2);
    int steps = state_list(L, 3, "step");
    int ms = state_list(L, 3, "exp_avg");
    int vs = state_list(L, 3, "exp_avg_sq");
    int vmaxs = amsgrad ? state_list(L, 3, "max_exp_avg_sq") : 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1), done = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        td_tensor *p = list_tensor(L, 1, i, op, "parameter");
        if (!p) continue;
        td_tensor *g = grad_of(L, grads, i, p, op);
        if (!g) continue;
        lua_rawgeti(L, steps, i);
        lua_Integer step = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        lua_pop(L, 1);
        step++;
        td_tensor *m = state_tensor(L, ms, i, p, op, "exp_avg", NULL);
        td_tensor *v = state_tensor(L, vs, i, p, op, "exp_avg_sq", NULL);
        td_tensor *vmax = vmaxs ? state_tensor(L, vmaxs, i, p, op, "max_exp_avg_sq", NULL) : NULL;
        int rc = (ref ? td_adam_update_ref : td_adam_update_)(p, g, m, v, vmax, step, lr, b1, b2, eps, wd, decoupled,
                                                               maximize);
        if (rc) return luaL_error(L, "%s (parameter %d): %s", op, (int)i, td_last_error());
        lua_pushinteger(L, step);
        lua_rawseti(L, steps, i);
        done++;
    }
    lua_pushinteger(L, done);
    return 1;
}

/* Norm of the gradients of params (idx) together; inf norm when norm_type is inf. */
static double grads_norm(lua_State *L, int idx, double norm_type, bool of_grads, const char *op) {
    check_list(L, idx, op, "the first argument");
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    double total = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        td_tensor *p = list_tensor(L, idx, i, op, "entry");
        td_tensor *g = p && of_grads ? p->grad : p;
        if (!g) continue;
        if (isinf(norm_type)) {
            if (g->dtype != TD_F32) luaL_error(L, "%s: tensors must be float32", op);
            td_tensor *c = td_contiguous(g);
            if (!c) tdl_error(L);
            const float *x = td_f32(c);
            for (int64_t k = 0, m = td_numel(c); k < m; k++)
                if (fabsf(x[k]) > total) total = fabsf(x[k]);
            td_release(c);
        } else {
            double s;
            if (td_sum_squares(g, &s)) luaL_error(L, "%s (entry %d): %s", op, (int)i, td_last_error());
            total += s;
        }
    }
    return isinf(norm_type) ? total : sqrt(total);
}

static double check_norm_type(lua_State *L, int idx, const char *op) {
    double t = luaL_optnumber(L, idx, 2);
    if (t != 2 && !isinf(t)) luaL_error(L, "%s: norm_type must be 2 or math.huge, got %f", op, t);
    return t;
}

static int l_grad_norm(lua_State *L) {
    double t = check_norm_type(L, 2, "grad_norm");
    lua_pushnumber(L, grads_norm(L, 1, t, true, "grad_norm"));
    return 1;
}

static int l_tensors_norm(lua_State *L) {
    lua_pushnumber(L, grads_norm(L, 1, 2, false, "tensors_norm"));
    return 1;
}

/* PyTorch's clip_grad_norm_: coef = max_norm / (total + 1e-6); gradients scaled when coef < 1. */
static int l_clip_grad_norm(lua_State *L) {
    const char *op = "clip_grad_norm_";
    double max_norm = luaL_checknumber(L, 2);
    double t = check_norm_type(L, 3, op);
    double total = grads_norm(L, 1, t, true, op);
    double coef = max_norm / (total + 1e-6);
    if (coef < 1) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        for (lua_Integer i = 1; i <= n; i++) {
            td_tensor *p = list_tensor(L, 1, i, op, "entry");
            if (!p || !p->grad) continue;
            bool prev = td_set_grad_enabled(false);
            int rc = td_mul_scalar_(p->grad, (float)coef);
            td_set_grad_enabled(prev);
            if (rc) return luaL_error(L, "%s (entry %d): %s", op, (int)i, td_last_error());
        }
    }
    lua_pushnumber(L, total);
    return 1;
}

static int l_ema_update(lua_State *L) {
    const char *op = "ema";
    check_list(L, 1, op, "shadows");
    check_list(L, 2, op, "params");
    double decay = luaL_checknumber(L, 3);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    if ((lua_Integer)lua_rawlen(L, 2) != n)
        return luaL_error(L, "%s: %d shadows for %d parameters", op, (int)n, (int)lua_rawlen(L, 2));
    for (lua_Integer i = 1; i <= n; i++) {
        td_tensor *s = list_tensor(L, 1, i, op, "shadow"), *p = list_tensor(L, 2, i, op, "parameter");
        if (!s || !p) return luaL_error(L, "%s: entry %d is missing", op, (int)i);
        if (td_ema_update_(s, p, decay)) return luaL_error(L, "%s (parameter %d): %s", op, (int)i, td_last_error());
    }
    return 0;
}

void tdl_register_optim(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"_sgd_step", l_sgd_step},
        {"_adam_step", l_adam_step},
        {"grad_norm", l_grad_norm},
        {"tensors_norm", l_tensors_norm},
        {"clip_grad_norm_", l_clip_grad_norm},
        {"_ema_update", l_ema_update},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
