"""CaptioningRNN: image features in, caption words out, with any registered recurrent cell.

The model of the CS231n assignment, generic over cells: image features reach the cell through a conditioning part
(:mod:`captionkit.conditioning`; today a projection to the initial hidden state), caption words are embedded, the
cell runs over the sequence, and an affine layer scores the vocabulary at each step.
The model knows the Cell interface only; ``cell_type`` is looked up in the registry. Each computation (loss, greedy
and beam decoding steps, caption likelihoods) is written once over the backend's layer functions
(:func:`captionkit.backend.runtime`): the numpy reference or the compiled kernels, which on the compiled backend run
on shards of a batch's rows side by side.
"""
import os

import numpy as np

from captionkit import decoding
from captionkit.attention import doubly_stochastic_penalty
from captionkit.backend import resolve_backend, runtime
from captionkit.checks import integer, number
from captionkit.precision import check_precision
from captionkit.spec import ModelSpec
from captionkit.vocabulary import END, NULL, START

__all__ = ["CaptioningRNN", "parameter_shapes"]

# Training holds each parameter about four times (values, gradients, Adam's two moments): a model whose parameters
# need more than this share of the machine's memory is refused before anything is allocated.
_PARAMETER_SHARE = 0.25
# A training step's arrays are most of what training holds; their estimate is generous (measured peaks stay well
# below it), so a step estimated above half the memory is refused, which stops absurd batch sizes before they swap.
_STEP_SHARE = 0.5


def parameter_shapes(cell, input_dim, wordvec_dim, hidden_dim, vocab_size):
    """``{name: shape}`` of every parameter of a model with ``cell`` (a Cell instance) and a pooled feature vector of
    ``input_dim`` values: :meth:`ModelSpec.parameter_shapes` under the argument names it has always had."""
    spec = ModelSpec(cell.name, (input_dim,), wordvec_dim, hidden_dim, vocab_size)
    return spec.parameter_shapes(cell)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform tells
        return None


def _refuse_beyond_memory(size, share, what):
    """ValueError ``what``... when ``size`` bytes are more than ``share`` of this machine's memory."""
    memory = _physical_memory()
    if memory is not None and size > share * memory:
        raise ValueError(f"{what}: more than {'a quarter' if share == 0.25 else 'half'} of this machine's "
                         f"{memory / 2**30:.0f} GiB of memory")


class CaptioningRNN:
    """A recurrent captioning model.

    Parameters (all in ``self.params``): W_embed (V, W), W_proj (D, H), b_proj (H,), W_vocab (H, V), b_vocab (V,),
    plus the cell's own (vanilla RNN: Wx (W, H), Wh (H, H), b (H,)). D is ``input_dim``, W ``wordvec_dim``, H
    ``hidden_dim`` and V ``len(word_to_idx)``.

    Initial values are drawn from ``np.random`` (so ``np.random.seed`` makes them reproducible, as in the notebook)
    unless ``seed`` is given, in the assignment's order: W_embed, W_proj, the cell's parameters, W_vocab.
    ``backend`` is ``"auto"``, ``"numpy"`` or ``"cython"`` (None: the ``CAPTIONKIT_BACKEND`` environment variable).

    Grids of image regions: with ``regions`` L the features are (N, L, D) and, without ``attention``, pooled by
    their mean; ``attention`` names a mechanism of :mod:`captionkit.attention` (``"soft"``) through which the cell
    reads the grid at every step, of size ``attention_dim`` (default ``hidden_dim``), and the loss adds the doubly
    stochastic penalty times ``attention_penalty`` (:mod:`captionkit.attention.penalty`). docs/attention.md.

    ``precision`` is how the matrix products run (:data:`captionkit.precision.PRECISIONS`): ``"fp32"`` in the
    model's dtype; ``"bf16"`` (float32 models whose cell is a GatedCell, and whose attention, if any, the engine
    runs: "soft") with both inputs of every product rounded to bfloat16 and float32 sums, torch.autocast's mixed
    precision, while the parameters, their updates, the cell's pointwise arithmetic, softmax and the loss stay
    float32. On the compiled backend bf16 needs
    a CPU with AVX512-BF16; the numpy backend emulates it anywhere. docs/precision.md.
    """

    def __init__(
        self,
        word_to_idx,
        input_dim=512,
        wordvec_dim=128,
        hidden_dim=128,
        cell_type="rnn",
        dtype=np.float32,
        backend=None,
        seed=None,
        regions=None,
        attention=None,
        attention_dim=None,
        attention_penalty=1.0,
        precision="fp32",
    ):
        integer("input_dim", input_dim)  # named as the caller spelled it; the spec checks the other arguments
        if not isinstance(word_to_idx, dict) or NULL not in word_to_idx:
            raise ValueError(f"word_to_idx must be a dict that maps {NULL!r} (and the other words) to integer ids")
        feature_shape = (input_dim,) if regions is None else (integer("regions", regions), input_dim)
        self.spec = ModelSpec(cell_type=cell_type, feature_shape=feature_shape, wordvec_dim=wordvec_dim,
                              hidden_dim=hidden_dim, vocab_size=len(word_to_idx), dtype=dtype, attention=attention,
                              attention_dim=attention_dim)
        self.attention_penalty = number("attention_penalty", attention_penalty, minimum=0)
        self.precision = check_precision(precision, self.spec.dtype)

        self.cell_type = cell_type
        self.backend = resolve_backend(backend)
        self.cell = self.spec.build_cell(self.backend, self.precision)
        self._runtime = runtime(self.backend, self.precision)  # the one that the cell, conditioning and decoding use
        self.conditioning = self.spec.conditioning(self._runtime.ops)
        self.cell_sizes = self.spec.cell_sizes(self.conditioning.context_dim)
        self.dtype = self.spec.numpy_dtype
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self.input_dim = self.spec.feature_dim
        self.wordvec_dim, self.hidden_dim, self.vocab_size = self.spec.wordvec_dim, self.spec.hidden_dim, \
            self.spec.vocab_size

        self._null = word_to_idx[NULL]
        self._start = word_to_idx.get(START)
        self._end = word_to_idx.get(END)

        D, W, H, V = self.input_dim, self.wordvec_dim, self.hidden_dim, self.vocab_size
        shapes = self.spec.parameter_shapes(self.cell)
        size = sum(int(np.prod(shape, dtype=object)) for shape in shapes.values()) * np.dtype(dtype).itemsize
        _refuse_beyond_memory(
            size, _PARAMETER_SHARE, f"a model with input_dim={D}, wordvec_dim={W}, hidden_dim={H} and {V} words has "
                      f"{size / 2**30:.1f} GiB of parameters, and training holds them about four times")
        rng = np.random if seed is None else np.random.RandomState(seed)
        params = {"W_embed": rng.standard_normal((V, W)) / 100}
        params.update(self.conditioning.init_params(rng))
        params.update(self.cell.init_params_for(self.cell_sizes, rng))
        params["W_vocab"] = rng.standard_normal((H, V)) / np.sqrt(H)
        params["b_vocab"] = np.zeros(V)
        self.params = {name: value.astype(self.dtype) for name, value in params.items()}
        self._runtime.prepare()  # a bad thread setting is an error now, not at the first step

    def training_step_bytes(self, batch_size, caption_length):
        """An upper estimate of the memory one :meth:`loss` call holds for ``batch_size`` captions of
        ``caption_length`` ids, computed without allocating: per caption and time step six vocabulary-wide arrays
        (scores, probabilities and their gradients), six hidden-wide ones per block the cell names
        (``Cell.step_blocks``: its state and gates, in its caches forward and backward) and three of word vectors;
        measured against real steps by ``benchmarks/bench_step_memory.py`` (docs/benchmarks.md, "Memory of a
        training step")."""
        W, H = self.wordvec_dim, self.hidden_dim
        steps = max(int(caption_length) - 1, 1)
        per_step = 6 * self.vocab_size + 6 * self.cell.step_blocks(self.cell_sizes) * H + 3 * W
        if self.spec.attention is not None:  # the mechanism's (L, A) arrays per step: scores, tanh, their gradient
            per_step += 3 * self.spec.feature_shape[0] * self.spec.attention_dim
        per_caption = steps * per_step + 3 * int(np.prod(self.spec.feature_shape))
        return int(batch_size) * per_caption * np.dtype(self.dtype).itemsize

    def check_batch_fits(self, batch_size, caption_length):
        """ValueError naming ``batch_size`` when one training step's estimate (:meth:`training_step_bytes`) is more
        than half the machine's memory; nothing is allocated."""
        size = self.training_step_bytes(integer("batch_size", batch_size), caption_length)
        _refuse_beyond_memory(size, _STEP_SHARE, f"batch_size={batch_size}: one training step on captions of "
                                                 f"{caption_length} ids would hold about {size / 2**30:.1f} GiB")

    # ------------------------------------------------------------------ helpers
    @property
    def cell_param_names(self):
        """Names of the cell's own parameters, in declaration order."""
        return list(self.cell.parameters_for(self.cell_sizes))

    def _cell_params(self):
        return {name: self.params[name] for name in self.cell_param_names}

    def _conditioning_params(self):
        return {name: self.params[name] for name in self.conditioning.parameters()}

    def _check_features(self, features):
        return self.spec.check_features(features)

    def _check_captions(self, captions, num_images):
        captions = np.asarray(captions)
        if not np.issubdtype(captions.dtype, np.integer):
            raise TypeError(f"captions must hold integer word ids, got dtype {captions.dtype}")
        if captions.ndim != 2 or captions.shape[0] != num_images or captions.shape[1] < 2:
            raise ValueError(
                f"captions must have shape (N, T) with N={num_images} (the number of feature rows) and T >= 2, "
                f"got {captions.shape}"
            )
        if captions.size and (captions.min() < 0 or captions.max() >= self.vocab_size):
            bad = captions[(captions < 0) | (captions >= self.vocab_size)][0]
            raise ValueError(f"captions contain word id {bad}, outside the vocabulary [0, {self.vocab_size})")
        return captions

    def _contiguous(self, a):
        """``a`` as the contiguous array of the model's dtype that the kernels take (no copy when it already is)."""
        return np.ascontiguousarray(a, dtype=self.dtype)

    def _teacher_forcing(self, captions):
        """The words the model reads, the words it must predict, and which of those count (not <NULL>)."""
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        return captions_in, captions_out, captions_out != self._null

    def _hidden_states(self, features, captions_in):
        """The forward pass up to the cell: the conditioning's cache, the word vectors' cache, h (N, T, H) and the
        cell's cache."""
        h0, context, conditioning_cache = self.conditioning.forward(features, self._conditioning_params())
        x, embed_cache = self._runtime.ops.word_embedding_forward(captions_in, self.params["W_embed"])
        h, cell_cache = self.cell.run_forward(x, h0, self._cell_params(), context)
        return conditioning_cache, embed_cache, self._contiguous(h), cell_cache

    # ------------------------------------------------------------------ training
    def loss(self, features, captions, row_weights=None):
        """Loss and gradients for a minibatch.

        features (N, D) image features; captions (N, T) word ids, each starting with ``<START>``. The model reads
        ``captions[:, :-1]`` and predicts ``captions[:, 1:]``; ``<NULL>`` targets count for nothing. Returns
        ``(loss, grads)`` where loss is the masked softmax loss summed over time and averaged over N, and grads has
        the keys of ``self.params``. ``row_weights`` (N,) multiply each caption's loss (default ones): with the
        sampled captions and their advantages this is self-critical training's loss (:mod:`captionkit.scst`).
        An attention model adds its doubly stochastic penalty to the unweighted loss only: with ``row_weights`` the
        weighted loss is the whole objective.
        """
        features = self._check_features(features)
        captions = self._check_captions(captions, features.shape[0])
        captions_in, captions_out, mask = self._teacher_forcing(captions)
        N = features.shape[0]
        weights = None if row_weights is None else np.asarray(row_weights)
        if weights is not None and weights.shape != (N,):
            raise ValueError(f"row_weights must have shape ({N},), one weight per caption, got {weights.shape}")
        results = self._runtime.map_rows(
            N, lambda rows: self._loss_rows(features[rows], captions_in[rows], captions_out[rows], mask[rows], N,
                                            None if weights is None else weights[rows])
        )
        return _add_up(results, self._runtime)

    def _loss_rows(self, features, captions_in, captions_out, mask, batch, row_weights=None):
        """Loss and gradients of rows of a batch of ``batch`` rows, each divided by ``batch``, so that the shards'
        add up to the batch's; ``row_weights`` those rows' weights (None: ones)."""
        ops, p = self._runtime.ops, self.params
        conditioning_cache, embed_cache, h, cell_cache = self._hidden_states(features, captions_in)
        loss, dh, dW_vocab, db_vocab = ops.temporal_softmax_affine_loss(h, p["W_vocab"], p["b_vocab"], captions_out,
                                                                         mask, batch=batch, row_weights=row_weights)
        grads = {"W_vocab": dW_vocab, "b_vocab": db_vocab}
        if self.spec.attention is None:
            dx, dh0, dcontext, cell_grads = self.cell.run_backward(dh, cell_cache)
        else:
            dalphas = None  # a weighted objective (SCST) is the whole loss: the penalty joins the unweighted one only
            if row_weights is None:
                penalty, dalphas = doubly_stochastic_penalty(self.cell.attention_weights(cell_cache), mask,
                                                             self.attention_penalty, batch)
                loss += penalty
            dx, dh0, dcontext, cell_grads = self.cell.run_backward(dh, cell_cache, dalphas,
                                                                   context_grad=self.conditioning.context_grad)
        grads.update(cell_grads)
        grads["W_embed"] = ops.word_embedding_backward(self._contiguous(dx), embed_cache)
        grads.update(self.conditioning.backward(self._contiguous(dh0), dcontext, conditioning_cache))
        return loss, grads

    def caption_nll(self, features, captions):
        """Negative log-likelihood of each caption: features (N, D), captions (N, T) -> (N,) float64.

        Captions are in the dataset's layout (``<START>`` first). Caption n's NLL is the sum over t of
        ``-log p(captions[n, t + 1] | image, captions[n, :t + 1])`` for the targets that are not ``<NULL>``
        (teacher forcing, as in training, with the forward pass of :meth:`loss`).
        """
        features = self._check_features(features)
        captions = self._check_captions(captions, features.shape[0])
        if features.shape[0] == 0:
            return np.zeros(0)
        captions_in, captions_out, mask = self._teacher_forcing(captions)
        p = self.params

        def nll(rows):
            h = self._hidden_states(features[rows], captions_in[rows])[2]
            return self._runtime.ops.temporal_softmax_affine_nll(h, p["W_vocab"], p["b_vocab"], captions_out[rows],
                                                                 mask[rows])

        return np.concatenate(self._runtime.map_rows(features.shape[0], nll))

    # ------------------------------------------------------------------ decoding
    def sample(self, features, max_length=30, beam_size=1, length_penalty=0.0):
        """Decoding, greedy or beam search: features (N, D) -> captions (N, max_length) int32.

        Position t holds the word chosen at step t (the first sampled word, not ``<START>``). Once a caption has
        produced ``<END>`` the rest of its row stays ``<NULL>``; decoding stops early when every caption has ended.
        ``beam_size`` > 1 runs beam search (:mod:`captionkit.decoding`, where ``length_penalty`` is explained).
        """
        return decoding.captions(self, features, max_length, beam_size, length_penalty)

    # ------------------------------------------------------------------ decoding's step protocol
    def map_rows(self, rows, task):
        """``[task(rows_slice), ...]`` over slices covering ``range(rows)``, on the backend's shards."""
        return self._runtime.map_rows(rows, task)

    def fused_greedy(self, features, max_length, with_weights=False):
        """Greedy captions (N, max_length) of checked features (N, D), N >= 1, in one call of the cell when it
        decodes whole captions itself (the numbers of decoding's step loop), else None. ``with_weights`` (attention
        models): (captions, the weights (N, max_length, L) of the step that chose each word)."""
        p = self.params
        h0, context = self.conditioning.decoding_inputs(features, self._conditioning_params())
        arguments = (h0, self._cell_params(), p["W_embed"], p["W_vocab"], p["b_vocab"], self._start, self._end,
                     self._null, max_length)
        if context is None:
            return self.cell.greedy_decode(*arguments)
        decoded = self.cell.greedy_decode(*arguments, context=context)
        return decoded if decoded is None or with_weights else decoded[0]

    def decoding_start(self, features):
        """For checked features (N, D): (the cell's state before the first word, a tuple of arrays with N rows, h
        first; the per-step context, None for this model's conditioning)."""
        if features.shape[0] == 0:
            return self.cell.initial_state(np.zeros((0, self.hidden_dim), dtype=self.dtype)), None
        h0, context = self.conditioning.decoding_inputs(features, self._conditioning_params())
        return self.cell.decoding_inputs(h0, context, self._cell_params())

    def attention_weights(self, state):
        """The attention weights (M, L) of the step that gave decoding ``state``, or None without attention."""
        return None if self.spec.attention is None else state[-1]

    def _advance(self, words, state, context, images):
        """The cell's next state (M rows) after reading words (M,); ``images`` (M,) the row of ``context`` each row
        reads."""
        return self.cell.run_step(self.params["W_embed"][words], state, self._cell_params(), context, images)

    def greedy_step(self, words, state, context, images):
        """One greedy step for M rows: (the best next word of each (M,) int64, the next state)."""
        next_state = self._advance(words, state, context, images)
        words = self._runtime.ops.affine_argmax(self._contiguous(next_state[0]), self.params["W_vocab"],
                                                self.params["b_vocab"])
        return words, next_state

    def sampling_step(self, words, state, context, images, uniforms, temperature):
        """One step of random sampling for M rows: their last words (M,), state, context and images as
        :meth:`decoding_step` takes them, and uniforms (M,) in [0, 1) -> (the drawn words (M,) int64, the next
        state): each row's word by inverse transform of its uniform under the softmax at ``temperature``, in O(V)
        per row on the backend's shards."""
        p = self.params

        def draw(rows):
            next_state = self._advance(words[rows], tuple(s[rows] for s in state), context, images[rows])
            drawn, _ = self._runtime.ops.affine_sample(self._contiguous(next_state[0]), p["W_vocab"], p["b_vocab"],
                                                       uniforms[rows], temperature)
            return drawn, next_state

        parts = self._runtime.map_rows(words.shape[0], draw)
        if len(parts) == 1:
            return parts[0]
        state = tuple(np.concatenate([part[1][i] for part in parts]) for i in range(len(parts[0][1])))
        return np.concatenate([part[0] for part in parts]), state

    def decoding_step(self, words, state, context, images, k):
        """One decoding step for M hypotheses: their last words (M,), their state (M rows), the per-image context
        and each row's image (M,) -> ``(log_probs (M, k), word_ids (M, k), next state)``, each row's k best next
        words (k at most V) by their log-probability, best first (ties: the lower id), on the backend's shards."""
        p = self.params
        k = min(k, self.vocab_size)

        def expand(rows):
            next_state = self._advance(words[rows], tuple(s[rows] for s in state), context, images[rows])
            log_probs, ids = self._runtime.ops.affine_log_softmax_topk(self._contiguous(next_state[0]),
                                                                       p["W_vocab"], p["b_vocab"], k)
            return log_probs, ids, next_state

        parts = self._runtime.map_rows(words.shape[0], expand)
        if len(parts) == 1:
            return parts[0]
        state = tuple(np.concatenate([part[2][i] for part in parts]) for i in range(len(parts[0][2])))
        return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts]), state


def _add_up(results, runtime):
    """The loss and gradients of a batch from its shards' (each already divided by the batch's N), added up on
    ``runtime``'s threads (a :class:`captionkit.backend.Runtime`)."""
    if len(results) == 1:
        return results[0]
    loss = sum(shard_loss for shard_loss, _ in results)
    grads = {name: grad if grad.flags.writeable and grad.flags.c_contiguous else np.array(grad, order="C")
             for name, grad in results[0][1].items()}  # flattened below, so must be writeable in place
    others = [shard_grads for _, shard_grads in results[1:]]
    count = len(results)

    def add_slice(i):
        """Add the other shards' gradients into the first's, over slice i of every flattened array."""
        for name, grad in grads.items():
            flat = grad.reshape(-1)
            part = slice(flat.size * i // count, flat.size * (i + 1) // count)
            for shard_grads in others:
                flat[part] += shard_grads[name].reshape(-1)[part]

    runtime.run([lambda i=i: add_slice(i) for i in range(count)])
    return loss, grads
