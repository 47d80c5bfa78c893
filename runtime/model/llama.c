// SPDX-License-Identifier: MIT
#include "runtime/model/llama.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <string.h>

struct llm_layer {
	struct be_weight *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv;
	struct be_weight *ffn_norm, *w_gate, *w_up, *w_down;
};

struct llm {
	struct backend *be;
	const struct model_desc *m;
	int n_ctx, block_tokens, n_blocks, max_tokens, max_seqs, max_out;
	int q_dim, kv_dim;

	struct be_weight *tok_embd, *output_norm, *output;
	struct llm_layer *layers;
	struct be_kv *kv;
	llm_layer_fn layer_hook;
	void *layer_ctx;

	/* Activations, [max_tokens][width] f32. */
	struct be_buf *x;      /* residual stream (dim) */
	struct be_buf *h;      /* normed input / projection output (dim) */
	struct be_buf *q;      /* (q_dim) */
	struct be_buf *k;      /* (kv_dim) */
	struct be_buf *v;      /* (kv_dim) */
	struct be_buf *att;    /* (q_dim) */
	struct be_buf *g;      /* (ffn) */
	struct be_buf *u;      /* (ffn) */
	struct be_buf *xo;     /* [max_out][dim]: rows that produce logits */
	struct be_buf *logits; /* [max_out][n_vocab] */
};

static int load(struct llm *llm, const struct gguf_tensor *t, struct be_weight **w)
{
	int ret;

	*w = NULL;
	if (!t)
		return 0;
	ret = be_weight_load(llm->be, t, w);
	if (ret)
		log_error("llm", "cannot prepare tensor '%s' for the %s backend: %s", t->name,
			  backend_name(llm->be), duet_strerror(ret));
	return ret;
}

static int load_weights(struct llm *llm)
{
	const struct model_desc *m = llm->m;
	int ret;

	if ((ret = load(llm, m->tok_embd, &llm->tok_embd)) ||
	    (ret = load(llm, m->output_norm, &llm->output_norm)))
		return ret;
	if (m->tied_output)
		llm->output = llm->tok_embd;
	else if ((ret = load(llm, m->output, &llm->output)))
		return ret;
	for (uint32_t i = 0; i < m->n_layers; i++) {
		const struct model_layer *s = &m->layers[i];
		struct llm_layer *d = &llm->layers[i];
		if ((ret = load(llm, s->attn_norm, &d->attn_norm)) ||
		    (ret = load(llm, s->wq, &d->wq)) || (ret = load(llm, s->wk, &d->wk)) ||
		    (ret = load(llm, s->wv, &d->wv)) || (ret = load(llm, s->wo, &d->wo)) ||
		    (ret = load(llm, s->bq, &d->bq)) || (ret = load(llm, s->bk, &d->bk)) ||
		    (ret = load(llm, s->bv, &d->bv)) ||
		    (ret = load(llm, s->ffn_norm, &d->ffn_norm)) ||
		    (ret = load(llm, s->w_gate, &d->w_gate)) ||
		    (ret = load(llm, s->w_up, &d->w_up)) ||
		    (ret = load(llm, s->w_down, &d->w_down)))
			return ret;
	}
	return 0;
}

static void free_weights(struct llm *llm)
{
	if (llm->layers) {
		for (uint32_t i = 0; i < llm->m->n_layers; i++) {
			struct llm_layer *d = &llm->layers[i];
			struct be_weight *all[] = { d->attn_norm, d->wq,     d->wk,   d->wv,
						    d->wo,	  d->bq,     d->bk,   d->bv,
						    d->ffn_norm,  d->w_gate, d->w_up, d->w_down };
			for (size_t j = 0; j < sizeof(all) / sizeof(all[0]); j++)
				be_weight_free(llm->be, all[j]);
		}
	}
	if (llm->output != llm->tok_embd)
		be_weight_free(llm->be, llm->output);
	be_weight_free(llm->be, llm->tok_embd);
	be_weight_free(llm->be, llm->output_norm);
}

static int alloc_act(struct llm *llm, struct be_buf **b, size_t rows, size_t width)
{
	int ret = be_buf_alloc(llm->be, rows * width * sizeof(float), BE_MEM_HOST, b);

	if (ret)
		log_error("llm", "cannot allocate a %zu x %zu activation buffer: %s", rows, width,
			  duet_strerror(ret));
	return ret;
}

static int alloc_buffers(struct llm *llm)
{
	const struct model_desc *m = llm->m;
	size_t t = (size_t)llm->max_tokens;
	int ret;

	if ((ret = alloc_act(llm, &llm->x, t, m->dim)) ||
	    (ret = alloc_act(llm, &llm->h, t, m->dim)) ||
	    (ret = alloc_act(llm, &llm->q, t, (size_t)llm->q_dim)) ||
	    (ret = alloc_act(llm, &llm->k, t, (size_t)llm->kv_dim)) ||
	    (ret = alloc_act(llm, &llm->v, t, (size_t)llm->kv_dim)) ||
	    (ret = alloc_act(llm, &llm->att, t, (size_t)llm->q_dim)) ||
	    (ret = alloc_act(llm, &llm->g, t, m->ffn)) ||
	    (ret = alloc_act(llm, &llm->u, t, m->ffn)) ||
	    (ret = alloc_act(llm, &llm->xo, (size_t)llm->max_out, m->dim)) ||
	    (ret = alloc_act(llm, &llm->logits, (size_t)llm->max_out, m->n_vocab)))
		return ret;
	return 0;
}

void llm_destroy(struct llm *llm)
{
	if (!llm)
		return;
	struct be_buf *bufs[] = { llm->x,   llm->h, llm->q, llm->k,  llm->v,
				  llm->att, llm->g, llm->u, llm->xo, llm->logits };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		be_buf_free(llm->be, bufs[i]);
	be_kv_destroy(llm->be, llm->kv);
	free_weights(llm);
	duet_free(llm->layers);
	duet_free(llm);
}

int llm_create(struct backend *be, const struct model_desc *m, const struct llm_options *o,
	       struct llm **out)
{
	struct llm *llm;
	struct be_kv_layout kl;
	int ret;

	*out = NULL;
	if (m->vocab_only) {
		log_error("llm", "model '%s' was loaded vocabulary-only", m->name);
		return -EINVAL;
	}
	if (o->kv_dtype != GGML_TYPE_F16 && o->kv_dtype != GGML_TYPE_F32) {
		log_error("llm", "KV cache type %s is not supported (F16 or F32)",
			  ggml_type_name(o->kv_dtype) ? ggml_type_name(o->kv_dtype) : "?");
		return -EINVAL;
	}
	llm = duet_calloc(1, sizeof(*llm));
	if (!llm)
		return -ENOMEM;
	llm->be = be;
	llm->m = m;
	llm->n_ctx = o->n_ctx > 0 ? o->n_ctx : (int)m->n_ctx;
	llm->block_tokens = o->block_tokens > 0 ? o->block_tokens : 16;
	llm->max_tokens = o->max_tokens > 0 ? o->max_tokens : 512;
	llm->max_seqs = o->max_seqs > 0 ? o->max_seqs : 1;
	llm->max_out = o->max_out > 0 ? o->max_out : llm->max_seqs;
	if (llm->max_out > llm->max_tokens)
		llm->max_out = llm->max_tokens;
	/* Whole blocks: the context is rounded up to a block multiple. */
	llm->n_ctx = (llm->n_ctx + llm->block_tokens - 1) / llm->block_tokens * llm->block_tokens;
	llm->n_blocks =
		o->n_blocks > 0 ? o->n_blocks : llm->max_seqs * (llm->n_ctx / llm->block_tokens);
	if (o->n_blocks <= 0 && o->kv_budget > 0) {
		/* Bytes of one block in every layer: K and V rows of block_tokens tokens. */
		size_t elem = o->kv_dtype == GGML_TYPE_F16 ? 2 : 4;
		size_t per = 2 * (size_t)llm->block_tokens * m->n_kv_heads * m->head_dim * elem *
			     m->n_layers;
		size_t n = o->kv_budget / per;
		if (n < 1 || n > INT32_MAX / (size_t)llm->block_tokens) {
			log_error("llm", "a KV budget of %zu bytes holds %zu blocks of %zu bytes",
				  o->kv_budget, n, per);
			ret = -EINVAL;
			goto destroy;
		}
		llm->n_blocks = (int)n;
	}
	llm->q_dim = (int)(m->n_heads * m->head_dim);
	llm->kv_dim = (int)(m->n_kv_heads * m->head_dim);
	llm->layers = duet_calloc(m->n_layers, sizeof(*llm->layers));
	if (!llm->layers) {
		ret = -ENOMEM;
		goto destroy;
	}
	ret = load_weights(llm);
	if (ret)
		goto destroy;
	ret = alloc_buffers(llm);
	if (ret)
		goto destroy;
	kl = (struct be_kv_layout){
		.n_layers = (int)m->n_layers,
		.n_blocks = llm->n_blocks,
		.block_tokens = llm->block_tokens,
		.n_kv_heads = (int)m->n_kv_heads,
		.head_dim = (int)m->head_dim,
		.dtype = o->kv_dtype,
	};
	ret = be_kv_create(be, &kl,
			   o->shared_kv ? (o->hugepages ? BE_MEM_HOST_SHARED_HUGE : BE_MEM_HOST_SHARED)
			   : o->hugepages ? BE_MEM_HOST_HUGE
					  : BE_MEM_HOST,
			   &llm->kv);
	if (ret) {
		log_error("llm", "cannot create a KV pool of %d blocks: %s", llm->n_blocks,
			  duet_strerror(ret));
		goto destroy;
	}
	*out = llm;
	return 0;

destroy:
	llm_destroy(llm);
	return ret;
}

const struct model_desc *llm_model(const struct llm *llm)
{
	return llm->m;
}

int llm_n_ctx(const struct llm *llm)
{
	return llm->n_ctx;
}

int llm_block_tokens(const struct llm *llm)
{
	return llm->block_tokens;
}

int llm_n_blocks(const struct llm *llm)
{
	return llm->n_blocks;
}

int llm_max_tokens(const struct llm *llm)
{
	return llm->max_tokens;
}

int llm_max_out(const struct llm *llm)
{
	return llm->max_out;
}

void llm_set_layer_hook(struct llm *llm, llm_layer_fn fn, void *ctx)
{
	llm->layer_hook = fn;
	llm->layer_ctx = ctx;
}

int llm_kv_pool(const struct llm *llm, struct be_region *out)
{
	int ret = be_kv_region(llm->be, llm->kv, 0, out);

	if (ret == 0)
		out->bytes *= llm->m->n_layers;
	return ret;
}

int llm_kv_range(const struct llm *llm, int layer, int32_t block, int n, size_t *offset,
		 size_t *len)
{
	struct be_region r;
	size_t block_bytes;
	int ret;

	if (layer < 0 || (uint32_t)layer >= llm->m->n_layers || block < 0 || n < 1 ||
	    block > llm->n_blocks - n)
		return -EINVAL;
	ret = be_kv_region(llm->be, llm->kv, layer, &r);
	if (ret)
		return ret;
	block_bytes = r.bytes / (size_t)llm->n_blocks;
	*offset = r.bytes * (size_t)layer + block_bytes * (size_t)block;
	*len = block_bytes * (size_t)n;
	return 0;
}

struct be_kv *llm_kv(const struct llm *llm)
{
	return llm->kv;
}

int llm_kv_copy(struct llm *llm, int32_t src, int32_t dst, int n_tokens)
{
	return be_kv_copy(llm->be, llm->kv, src, dst, n_tokens);
}

/* One transformer block over the step's tokens: x += attn(norm(x)); x += ffn(norm(x)). */
static int layer_forward(struct llm *llm, int il, int n)
{
	const struct model_desc *m = llm->m;
	const struct llm_layer *L = &llm->layers[il];
	struct backend *be = llm->be;
	int ret;

	if ((ret = be_rmsnorm(be, llm->x, L->attn_norm, llm->h, n, (int)m->dim, m->rms_eps)) ||
	    (ret = be_matmul(be, llm->h, L->wq, L->bq, llm->q, n)) ||
	    (ret = be_matmul(be, llm->h, L->wk, L->bk, llm->k, n)) ||
	    (ret = be_matmul(be, llm->h, L->wv, L->bv, llm->v, n)) ||
	    (ret = be_rope(be, llm->q, llm->k, (int)m->n_heads, (int)m->n_kv_heads,
			   (int)m->head_dim, (int)m->rope_dim, m->rope_base,
			   m->rope_mode == MODEL_ROPE_NEOX)) ||
	    (ret = be_kv_store(be, llm->kv, il, llm->k, llm->v)) ||
	    (ret = be_attention(be, llm->q, llm->kv, il, llm->att, (int)m->n_heads)) ||
	    (ret = be_matmul(be, llm->att, L->wo, NULL, llm->h, n)) ||
	    (ret = be_add(be, llm->x, llm->h, (int)m->dim)))
		return ret;

	if ((ret = be_rmsnorm(be, llm->x, L->ffn_norm, llm->h, n, (int)m->dim, m->rms_eps)) ||
	    (ret = be_matmul(be, llm->h, L->w_gate, NULL, llm->g, n)) ||
	    (ret = be_matmul(be, llm->h, L->w_up, NULL, llm->u, n)) ||
	    (ret = be_swiglu(be, llm->g, llm->u, llm->g, (int)m->ffn)) ||
	    (ret = be_matmul(be, llm->g, L->w_down, NULL, llm->h, n)) ||
	    (ret = be_add(be, llm->x, llm->h, (int)m->dim)))
		return ret;
	return 0;
}

int llm_step(struct llm *llm, const struct be_step *s, float *logits)
{
	const struct model_desc *m = llm->m;
	int ret;

	if (s->n_tokens < 1 || s->n_tokens > llm->max_tokens || s->n_out > llm->max_out ||
	    s->n_seqs > llm->max_seqs)
		return -EINVAL;
	for (int i = 0; i < s->n_tokens; i++) {
		if (s->tokens[i] < 0 || (uint32_t)s->tokens[i] >= m->n_vocab ||
		    s->pos[i] >= llm->n_ctx)
			return -EINVAL;
	}
	ret = be_step_begin(llm->be, s);
	if (ret)
		return ret;
	ret = be_embed(llm->be, llm->tok_embd, llm->x);
	for (int il = 0; ret == 0 && il < (int)m->n_layers; il++) {
		ret = layer_forward(llm, il, s->n_tokens);
		if (ret == 0 && llm->layer_hook) {
			ret = be_sync(llm->be);
			if (ret == 0)
				ret = llm->layer_hook(llm->layer_ctx, il);
		}
	}
	if (ret)
		return ret;
	if (s->n_out == 0)
		return be_sync(llm->be);
	if ((ret = be_gather_out(llm->be, llm->x, llm->xo, (int)m->dim)) ||
	    (ret = be_rmsnorm(llm->be, llm->xo, llm->output_norm, llm->xo, s->n_out, (int)m->dim,
			      m->rms_eps)) ||
	    (ret = be_matmul(llm->be, llm->xo, llm->output, NULL, llm->logits, s->n_out)) ||
	    (ret = be_sync(llm->be)))
		return ret;
	return be_download(llm->be, llm->logits, 0, logits,
			   sizeof(float) * (size_t)s->n_out * m->n_vocab);
}

/* --- single sequence ----------------------------------------------------------- */

int llm_seq_init(struct llm_seq *s, struct llm *llm)
{
	int n_tables = llm->n_ctx / llm->block_tokens;

	memset(s, 0, sizeof(*s));
	if (n_tables > llm->n_blocks) {
		log_error("llm", "a %d-token sequence needs %d KV blocks; the pool has %d",
			  llm->n_ctx, n_tables, llm->n_blocks);
		return -ENOSPC;
	}
	s->llm = llm;
	s->table = duet_calloc((size_t)n_tables, sizeof(int32_t));
	s->scratch = duet_calloc((size_t)llm->max_tokens * 5, sizeof(int32_t));
	if (!s->table || !s->scratch) {
		llm_seq_free(s);
		return -ENOMEM;
	}
	for (int i = 0; i < n_tables; i++)
		s->table[i] = i;
	return 0;
}

void llm_seq_free(struct llm_seq *s)
{
	duet_free(s->table);
	duet_free(s->scratch);
	memset(s, 0, sizeof(*s));
}

void llm_seq_reset(struct llm_seq *s)
{
	s->n_past = 0;
}

int llm_seq_eval(struct llm_seq *s, const int32_t *ids, int n, float *last_logits,
		 float *all_logits)
{
	struct llm *llm = s->llm;
	int max = llm->max_tokens, n_vocab = (int)llm->m->n_vocab;
	int32_t table_start = 0;
	int ret;

	if (n < 1)
		return -EINVAL;
	if (n > llm->n_ctx - s->n_past)
		return -ENOSPC;
	if (all_logits && llm->max_out < (n < max ? n : max))
		return -EINVAL;
	for (int done = 0; done < n;) {
		int chunk = n - done < max ? n - done : max;
		int32_t *tok = s->scratch, *pos = tok + max, *seq = pos + max, *slot = seq + max;
		int32_t *out_rows = slot + max;
		bool last = done + chunk == n;
		int n_out;

		for (int i = 0; i < chunk; i++) {
			tok[i] = ids[done + i];
			pos[i] = s->n_past + i;
			seq[i] = 0;
			slot[i] = pos[i]; /* identity table: block p / bt holds position p */
			out_rows[i] = i;
		}
		if (all_logits) {
			n_out = chunk;
		} else if (last) {
			n_out = 1;
			out_rows[0] = chunk - 1;
		} else {
			n_out = 0;
		}
		struct be_step st = {
			.n_tokens = chunk,
			.tokens = tok,
			.pos = pos,
			.seq = seq,
			.slot = slot,
			.n_seqs = 1,
			.table_start = &table_start,
			.block_tables = s->table,
			.n_table = llm->n_ctx / llm->block_tokens,
			.n_out = n_out,
			.out_rows = out_rows,
		};
		float *dst = all_logits ? all_logits + (size_t)done * n_vocab : last_logits;
		ret = llm_step(llm, &st, dst);
		if (ret)
			return ret;
		if (all_logits && last && last_logits)
			memcpy(last_logits, all_logits + (size_t)(n - 1) * n_vocab,
			       sizeof(float) * (size_t)n_vocab);
		s->n_past += chunk;
		done += chunk;
	}
	return 0;
}
