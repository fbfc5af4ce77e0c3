/* Define-by-run tape: each result that needs gradients holds a node (backward function, saved
 * tensors, inputs). backward() orders the nodes reachable from the root topologically, runs
 * them in reverse, accumulates leaf gradients into .grad and then frees the graph. */
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

td_tensor *td_alias(const td_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset);

static _Thread_local bool grad_enabled = true;

bool td_grad_enabled(void) { return grad_enabled; }

bool td_set_grad_enabled(bool on) {
    bool prev = grad_enabled;
    grad_enabled = on;
    return prev;
}

bool td_needs_grad(const td_tensor *t) { return t && t->requires_grad && t->dtype == TD_F32; }

static void node_clear(td_node *n) {
    for (int i = 0; i < TD_NODE_MAX_IN; i++) {
        td_release(n->in[i]);
        n->in[i] = NULL;
    }
    for (int i = 0; i < TD_NODE_MAX_SAVED; i++) {
        td_release(n->saved[i]);
        n->saved[i] = NULL;
    }
    td_release(n->gout);
    n->gout = NULL;
}

void td_node_release(td_node *n) {
    if (!n || --n->refcount > 0) return;
    node_clear(n);
    free(n);
}

/* What a node keeps of a non-leaf input: its shape and the node that made it, not its data.
 * Holding the tensor itself kept every intermediate result alive until the end of backward,
 * whether or not a backward function needed it; what backward needs is saved explicitly
 * (td_node_save). Leaf inputs are kept as they are: their .grad is written. */
static td_tensor *husk(const td_tensor *t) {
    td_tensor *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->refcount = 1;
    h->dtype = t->dtype;
    h->ndim = t->ndim;
    memcpy(h->shape, t->shape, sizeof h->shape);
    memcpy(h->stride, t->stride, sizeof h->stride);
    h->requires_grad = true;
    h->node = t->node;
    t->node->refcount++;
    return h;
}

td_node *td_record(td_tensor *out, const char *name, td_backward_fn bw, int n_in, td_tensor **ins) {
    if (!grad_enabled) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= td_needs_grad(ins[i]);
    if (!any) return NULL;
    td_node *n = calloc(1, sizeof *n);
    if (!n) return NULL; /* out of memory: the result simply carries no graph */
    n->refcount = 1;
    n->name = name;
    n->backward = bw;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        if (!td_needs_grad(ins[i])) continue;
        if (ins[i]->node) {
            n->in[i] = husk(ins[i]);
            if (!n->in[i]) { /* out of memory: the result carries no graph */
                node_clear(n);
                free(n);
                return NULL;
            }
        } else {
            n->in[i] = ins[i];
            td_retain(ins[i]);
        }
    }
    n->out_ndim = out->ndim;
    memcpy(n->out_shape, out->shape, sizeof out->shape);
    out->node = n;
    out->requires_grad = true;
    return n;
}

void td_node_save(td_node *n, int slot, td_tensor *t) {
    if (!n) return;
    td_release(n->saved[slot]);
    n->saved[slot] = t ? td_alias(t, t->ndim, t->shape, t->stride, t->offset) : NULL;
    n->saved_version[slot] = t ? t->storage->version : 0;
}

/* A holder that this slot alone references, with a buffer of its own: it may be added to in place. */
static bool sole_owner(const td_tensor *h) {
    return h->refcount == 1 && h->storage->refcount == 1 && td_is_contiguous(h);
}

/* dst (grad holder, may be NULL) += g; returns the holder. g is borrowed. `leaf`: the holder
 * becomes a leaf's .grad, which users and optimisers change in place (clip_grad_norm_), so it
 * must own its buffer from the start; a node's holder may share its first gradient when that is
 * contiguous (the same g handed to both inputs of an add) and is added to out of place if a
 * second one comes. */
static td_tensor *accumulate(td_tensor *dst, td_tensor *g, int ndim, const int64_t *shape, bool leaf) {
    if (!dst) {
        td_tensor *s = td_sum_to(g, ndim, shape);
        if (!s) return NULL;
        /* A fresh gradient that only the caller references (refcount 1 before this retain, sole
         * user of its storage) is kept as it is; for a leaf anything shared (the same g handed
         * to two inputs, a view, a saved tensor) is copied. */
        bool exclusive = s->refcount == 2 && s == g && s->storage->refcount == 1 && td_is_contiguous(s);
        bool own = s != g && sole_owner(s);
        if (!exclusive && !own && (leaf || !td_is_contiguous(s))) { /* backward functions read gout as contiguous */
            td_tensor *c = td_clone(s);
            td_release(s);
            s = c;
        }
        return s;
    }
    td_tensor *s = td_sum_to(g, ndim, shape);
    if (!s) return dst;
    if (sole_owner(dst)) {
        td_add_(dst, s, 1.0);
        td_release(s);
        return dst;
    }
    td_tensor *sum = td_binary(TD_ADD, dst, s); /* one pass, where a copy then an add took two */
    td_release(s);
    if (!sum) return dst;
    td_release(dst);
    return sum;
}

void td_node_accum(td_node *n, int k, td_tensor *g) {
    td_tensor *in = n->in[k];
    if (!in || !g) return;
    if (in->node) {
        in->node->gout = accumulate(in->node->gout, g, in->ndim, in->shape, false);
    } else if (in->requires_grad) {
        in->grad = accumulate(in->grad, g, in->ndim, in->shape, true);
    }
}

td_tensor *td_node_grad_holder(td_node *n, int k) {
    td_tensor *in = n->in[k];
    if (!in) return NULL;
    td_tensor *h = in->node ? in->node->gout : in->requires_grad ? in->grad : NULL;
    if (!h || h->dtype != TD_F32 || h->ndim != in->ndim || !sole_owner(h)) return NULL;
    for (int i = 0; i < h->ndim; i++)
        if (h->shape[i] != in->shape[i]) return NULL;
    return h;
}

typedef struct {
    td_node **v;
    size_t n, cap;
} node_vec;

static int push(node_vec *s, td_node *x) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 64;
        td_node **p = realloc(s->v, c * sizeof *p);
        if (!p) return -1;
        s->v = p;
        s->cap = c;
    }
    s->v[s->n++] = x;
    return 0;
}

static int mark_gen = 0;

/* Iterative post-order DFS: `order` ends with the root; reverse is a valid backward order. */
static int topo_sort(td_node *root, node_vec *order) {
    node_vec stack = {0};
    int gen = ++mark_gen * 2; /* gen: on stack, gen+1: done */
    if (push(&stack, root)) return -1;
    root->topo_mark = gen;
    while (stack.n) {
        td_node *n = stack.v[stack.n - 1];
        bool pushed = false;
        for (int i = 0; i < n->n_in; i++) {
            td_tensor *in = n->in[i];
            if (in && in->node && in->node->topo_mark != gen && in->node->topo_mark != gen + 1) {
                in->node->topo_mark = gen;
                if (push(&stack, in->node)) goto oom;
                pushed = true;
                break;
            }
        }
        if (!pushed) {
            n->topo_mark = gen + 1;
            stack.n--;
            if (push(order, n)) goto oom;
        }
    }
    free(stack.v);
    return 0;
oom:
    free(stack.v);
    return -1;
}

static _Thread_local const td_grad_hook *grad_hook = NULL;

const td_grad_hook *td_set_grad_hook(const td_grad_hook *h) {
    const td_grad_hook *prev = grad_hook;
    grad_hook = h;
    return prev;
}

/* A leaf input of a node: the slots whose .grad the node's backward may write. */
static td_tensor *leaf_in(const td_node *n, int i) {
    td_tensor *in = n->in[i];
    return in && !in->node && in->requires_grad ? in : NULL;
}

/* Before a hooked sweep: each leaf's grad_pending = the number of node slots that take it (a
 * leaf used twice by one node counts twice). Zeroed first, so that no count of an earlier
 * graph is left over; the sweep then brings every count back to 0. */
static void count_leaf_uses(const node_vec *order) {
    for (size_t i = 0; i < order->n; i++)
        for (int k = 0; k < order->v[i]->n_in; k++)
            if (leaf_in(order->v[i], k)) leaf_in(order->v[i], k)->grad_pending = 0;
    for (size_t i = 0; i < order->n; i++)
        for (int k = 0; k < order->v[i]->n_in; k++)
            if (leaf_in(order->v[i], k)) leaf_in(order->v[i], k)->grad_pending++;
}

/* After node n has run (or was skipped, having no gradient): its leaves have one use fewer
 * due, and a leaf with none left is final. Counting the nodes rather than td_node_accum calls
 * is what makes this exact: a backward that gives an input no gradient still ends its use. */
static void leaf_uses_done(const td_node *n, const td_grad_hook *h) {
    for (int k = 0; k < n->n_in; k++) {
        td_tensor *leaf = leaf_in(n, k);
        if (leaf && --leaf->grad_pending == 0) h->ready(leaf, h->ud);
    }
}

int td_backward(td_tensor *root, td_tensor *grad, bool retain_graph) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (!root->requires_grad)
        return td_fail_int("backward: the tensor does not require grad (no input of its graph has requires_grad)");
    if (grad) {
        if (grad->ndim != root->ndim || memcmp(grad->shape, root->shape, sizeof(int64_t) * root->ndim))
            return td_fail_int("backward: gradient of shape %s for a tensor of shape %s",
                               td_shape_str(grad, b1, sizeof b1), td_shape_str(root, b2, sizeof b2));
    } else if (td_numel(root) != 1) {
        return td_fail_int("backward: a gradient argument is needed for a non-scalar tensor of shape %s",
                           td_shape_str(root, b1, sizeof b1));
    }
    td_node *rn = root->node;
    const td_grad_hook *hook = grad_hook;
    if (!rn) { /* a leaf: its own gradient */
        td_tensor *g = grad ? grad : td_full(TD_F32, root->ndim, root->shape, 1.0);
        if (!g) return -1;
        if (hook) root->grad_pending = 1; /* the graph of one leaf, counted */
        if (hook && hook->start) hook->start(hook->ud);
        root->grad = accumulate(root->grad, g, root->ndim, root->shape, true);
        if (!grad) td_release(g);
        if (hook && --root->grad_pending == 0) hook->ready(root, hook->ud);
        return 0;
    }
    if (rn->freed)
        return td_fail_int("backward: the graph was already freed by an earlier backward (pass retain_graph = true)");
    node_vec order = {0};
    if (topo_sort(rn, &order)) {
        free(order.v);
        return td_fail_int("backward: out of memory");
    }
    for (size_t i = 0; i < order.n; i++)
        if (order.v[i]->freed) {
            free(order.v);
            return td_fail_int("backward: part of the graph (%s) was already freed by an earlier backward", order.v[i]->name);
        }
    /* every saved tensor as it was when saved, checked before any gradient is made */
    for (size_t i = 0; i < order.n; i++)
        for (int k = 0; k < TD_NODE_MAX_SAVED; k++) {
            const td_node *n = order.v[i];
            const td_tensor *s = n->saved[k];
            if (s && s->storage->version != n->saved_version[k]) {
                const char *by = s->storage->last_inplace ? s->storage->last_inplace : "an in-place op";
                td_fail_int("backward: one of the variables needed for gradient computation has been modified by an "
                            "inplace operation: %s changed a tensor of shape %s that %s saved (version %llu, saved at "
                            "%llu)",
                            by, td_shape_str(s, b1, sizeof b1), n->name, (unsigned long long)s->storage->version,
                            (unsigned long long)n->saved_version[k]);
                free(order.v);
                return -1;
            }
        }
    bool prev = td_set_grad_enabled(false);
    if (hook) {
        count_leaf_uses(&order);
        if (hook->start) hook->start(hook->ud);
    }
    td_tensor *g0 = grad ? td_contiguous(grad) : td_full(TD_F32, root->ndim, root->shape, 1.0);
    td_release(rn->gout);
    rn->gout = g0;
    /* Without retain_graph each node drops its saved tensors and inputs as soon as its backward
     * has run, so activations are freed while gradients are being made (the peak is not the
     * sum of both). The order holds a reference to every node until the end: clearing a node
     * may release the last other reference to a node that has yet to run. */
    for (size_t i = 0; i < order.n; i++) order.v[i]->refcount++;
    for (size_t i = order.n; i-- > 0;) {
        td_node *n = order.v[i];
        td_tensor *g = n->gout;
        n->gout = NULL;
        if (g) {
            if (td_profile_enabled()) {
                double t0 = td_clock();
                n->backward(n, g);
                td_profile_add(n->name, td_clock() - t0);
            } else {
                n->backward(n, g);
            }
            td_release(g);
        }
        if (hook) leaf_uses_done(n, hook); /* before node_clear drops the node's inputs */
        if (!retain_graph) {
            node_clear(n);
            n->freed = true;
        }
    }
    for (size_t i = 0; i < order.n; i++) td_node_release(order.v[i]);
    td_set_grad_enabled(prev);
    free(order.v);
    return 0;
}

int td_set_requires_grad(td_tensor *t, bool on) {
    if (t->node && !on)
        return td_fail_int("requires_grad_: cannot turn off gradients of a non-leaf tensor (use detach())");
    if (on && t->dtype != TD_F32) return td_fail_int("requires_grad_: only float32 tensors can require gradients");
    if (!t->node) t->requires_grad = on;
    return 0;
}

void td_zero_grad(td_tensor *t) {
    td_release(t->grad);
    t->grad = NULL;
}
