/* Shared helpers of the Lua bindings (vm/lua_*.c; the helpers live in lua_tensor.c). Each binding
 * file exports one tdl_register_<family>(lua_State *L) that adds its functions to the module table
 * on the stack top; luaopen_tdrl_core (lua_core.c) calls them all. */
#ifndef TDRL_BIND_H
#define TDRL_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "../ops/tensor.h"

#define TDL_TENSOR_MT "tdrl.Tensor"
#define TDL_GENERATOR_MT "tdrl.Generator"

/* The tensor userdata holds one reference. */
td_tensor *tdl_check_tensor(lua_State *L, int idx);
td_tensor *tdl_opt_tensor(lua_State *L, int idx); /* NULL if not a tensor */
/* Pushes t, taking over the caller's reference; if t is NULL raises the core's error. */
int tdl_push_tensor(lua_State *L, td_tensor *t);
/* Raises a Lua error with td_last_error(). */
int tdl_error(lua_State *L);
/* A tensor or a number (turned into a 0-d tensor that a userdata pushed on the stack owns, so
 * that an error raised later leaks nothing; *owned points to it, borrowed, else NULL). */
td_tensor *tdl_check_tensor_or_number(lua_State *L, int idx, td_tensor **owned);
td_generator *tdl_opt_generator(lua_State *L, int idx); /* default generator when absent */
/* Reads a shape from varargs (3, 4) or a table {3, 4} starting at idx; returns ndim. */
int tdl_check_shape(lua_State *L, int idx, int64_t *shape, int *next_idx);

/* One per binding file; lua_core.c calls them all, in one list. */
void tdl_register_tensor(lua_State *L); /* lua_tensor.c */
void tdl_register_sys(lua_State *L);    /* lua_sys.c */
void tdl_register_io(lua_State *L);     /* lua_io.c */
void tdl_register_nn(lua_State *L);     /* lua_nn.c */
void tdl_register_optim(lua_State *L);  /* lua_optim.c */
void tdl_register_data(lua_State *L);   /* lua_data.c */
void tdl_register_docs(lua_State *L);   /* core_docs.c */
void tdl_register_dist(lua_State *L);   /* lua_dist.c */

int luaopen_tdrl_core(lua_State *L);

#endif
