/* luaopen_tdrl_core: the module table 'tdrl.core', filled by each binding file in turn. This is
 * the one place a binding is registered: a new vm/lua_<family>.c declares its
 * tdl_register_<family> in bind.h and adds one line below. */
#include "bind.h"

int luaopen_tdrl_core(lua_State *L) {
    lua_newtable(L);
    tdl_register_tensor(L); /* lua_tensor.c: the Tensor and Generator userdata, creation, views, math */
    tdl_register_sys(L);    /* lua_sys.c: threads, memory, clock, profiler */
    tdl_register_io(L);     /* lua_io.c: safetensors, npy */
    tdl_register_nn(L);     /* lua_nn.c: the layers' kernels */
    tdl_register_optim(L);  /* lua_optim.c */
    tdl_register_data(L);   /* lua_data.c: readers, images, the loader */
    tdl_register_dist(L);   /* lua_dist.c: T._dist, MPI collectives (no-ops without mpirun) */
    tdl_register_docs(L);   /* core_docs.c: T._docs, signatures and one-line docs */
    return 1;
}
