"""The code cells of TransformerLens' demos/Grokking_Demo.ipynb after its first analysis cells (those are in
test_tl_demo_cells): attention and neuron plots, the SVD, the Fourier basis, key frequencies, neuron clusters, the
neuron-logit map, logit periodicity and the progress measures over checkpoints (restricted and excluded loss).

(name, source, change): the demo's source; `change` is None for a cell run as written, else the one-line reason for
what differs, a change the bridge needs as much as our model. IMPOSSIBLE: (name, source, reason) for a cell neither
can run. Sources keep the demo's lines as they are, so some pass 120 characters.
"""

from __future__ import annotations

NEEL_PLOTLY = ("needs neel_plotly's own line (line_labels, toggle_x, return_fig) or melt; the demo installs it "
               "with %pip from GitHub, it is on no package index")
RUN_FREQS = "the run's key frequencies (interp.fourier.key_frequencies) in place of 113's 17, 25, 32, 47"
PLOT_DROPPED = "its closing neel_plotly figure left out (see NEEL_PLOTLY); the metric runs as written"

KEY_FREQS_CELL = '''key_freqs = KEY_FREQS
key_freq_indices = [i for f in key_freqs for i in (2 * f - 1, 2 * f)]
fourier_embed = fourier_basis @ W_E
key_fourier_embed = fourier_embed[key_freq_indices]
print("key_fourier_embed", key_fourier_embed.shape)
imshow(key_fourier_embed @ key_fourier_embed.T, title="Dot Product of embedding of key Fourier Terms")'''

FOURIER_BASIS = '''fourier_basis = []
fourier_basis_names = []
fourier_basis.append(torch.ones(p))
fourier_basis_names.append("Constant")
for freq in range(1, p//2+1):
    fourier_basis.append(torch.sin(torch.arange(p)*2 * torch.pi * freq / p))
    fourier_basis_names.append(f"Sin {freq}")
    fourier_basis.append(torch.cos(torch.arange(p)*2 * torch.pi * freq / p))
    fourier_basis_names.append(f"Cos {freq}")
fourier_basis = torch.stack(fourier_basis, dim=0).to(device)
fourier_basis = fourier_basis/fourier_basis.norm(dim=-1, keepdim=True)
imshow(fourier_basis, xaxis="Input", yaxis="Component", y=fourier_basis_names)'''

NEURON_FREQ_NORM = '''neuron_freq_norm = torch.zeros(p//2, model.cfg.d_mlp).to(device)
for freq in range(0, p//2):
    for x in [0, 2*(freq+1) - 1, 2*(freq+1)]:
        for y in [0, 2*(freq+1) - 1, 2*(freq+1)]:
            neuron_freq_norm[freq] += fourier_neuron_acts[:, x, y]**2
neuron_freq_norm = neuron_freq_norm / fourier_neuron_acts.pow(2).sum(dim=[-1, -2])[None, :]
imshow(neuron_freq_norm, xaxis="Neuron", yaxis="Freq", y=torch.arange(1, p//2+1), title="Neuron Frac Explained by Freq")'''

TEST_LOGITS = '''def test_logits(logits, bias_correction=False, original_logits=None, mode="all"):
    # Calculates cross entropy loss of logits representing a batch of all p^2
    # possible inputs
    # Batch dimension is assumed to be first
    if logits.shape[1] == p * p:
        logits = logits.T
    if logits.shape == torch.Size([p * p, p + 1]):
        logits = logits[:, :-1]
    logits = logits.reshape(p * p, p)
    if bias_correction:
        # Applies bias correction - we correct for any missing bias terms,
        # independent of the input, by centering the new logits along the batch
        # dimension, and then adding the average original logits across all inputs
        logits = (
            einops.reduce(original_logits - logits, "batch ... -> ...", "mean") + logits
        )
    if mode == "train":
        return loss_fn(logits[train_indices], labels[train_indices])
    elif mode == "test":
        return loss_fn(logits[test_indices], labels[test_indices])
    elif mode == "all":
        return loss_fn(logits, labels)'''

GET_METRICS = '''def get_metrics(model, metric_cache, metric_fn, name, reset=False):
    if reset or (name not in metric_cache) or (len(metric_cache[name]) == 0):
        metric_cache[name] = []
        for c, sd in enumerate(tqdm.tqdm((model_checkpoints))):
            model.reset_hooks()
            model.load_state_dict(sd)
            out = metric_fn(model)
            if type(out) == torch.Tensor:
                out = utils.to_numpy(out)
            metric_cache[name].append(out)
        model.load_state_dict(model_checkpoints[-1])
        try:
            metric_cache[name] = torch.tensor(metric_cache[name])
        except:
            metric_cache[name] = torch.tensor(np.array(metric_cache[name]))
'''

# the projection onto the key frequencies' cos/sin(a + b) directions, as each restricted/excluded cell writes it
_PROJECT = '''a = torch.arange(p)[:, None]
b = torch.arange(p)[None, :]
for freq in key_freqs:
    cos_apb_vec = torch.cos(freq * 2 * torch.pi / p * (a + b)).to(device)
    cos_apb_vec /= cos_apb_vec.norm()
    cos_apb_vec = einops.rearrange(cos_apb_vec, "a b -> (a b) 1")
    approx_neuron_acts += (neuron_acts * cos_apb_vec).sum(dim=0) * cos_apb_vec
    sin_apb_vec = torch.sin(freq * 2 * torch.pi / p * (a + b)).to(device)
    sin_apb_vec /= sin_apb_vec.norm()
    sin_apb_vec = einops.rearrange(sin_apb_vec, "a b -> (a b) 1")
    approx_neuron_acts += (neuron_acts * sin_apb_vec).sum(dim=0) * sin_apb_vec
'''


def _indent(text: str) -> str:
    return "".join("    " + s if s.strip() else s for s in text.splitlines(keepends=True))


RESTRICTED = ('''approx_neuron_acts = torch.zeros_like(neuron_acts)
approx_neuron_acts += neuron_acts.mean(dim=0)
''' + _PROJECT + '''restricted_logits = approx_neuron_acts @ W_logit
print(loss_fn(restricted_logits[test_indices], test_labels))''')

GET_RESTRICTED_LOSS = ('''def get_restricted_loss(model):
    logits, cache = model.run_with_cache(dataset)
    logits = logits[:, -1, :]
    neuron_acts = cache["post", 0, "mlp"][:, -1, :]
    approx_neuron_acts = torch.zeros_like(neuron_acts)
    approx_neuron_acts += neuron_acts.mean(dim=0)
''' + _indent(_PROJECT) + '''    restricted_logits = approx_neuron_acts @ model.blocks[0].mlp.W_out @ model.unembed.W_U
    # Add bias term
    restricted_logits += logits.mean(dim=0, keepdim=True) - restricted_logits.mean(dim=0, keepdim=True)
    return loss_fn(restricted_logits[test_indices], test_labels)
get_restricted_loss(model)''')

EXCLUDED = ('''approx_neuron_acts = torch.zeros_like(neuron_acts)
# approx_neuron_acts += neuron_acts.mean(dim=0)
''' + _PROJECT + '''excluded_neuron_acts = neuron_acts - approx_neuron_acts
excluded_logits = excluded_neuron_acts @ W_logit
print(loss_fn(excluded_logits[train_indices], train_labels))''')

GET_EXCLUDED_LOSS = ('''def get_excluded_loss(model):
    logits, cache = model.run_with_cache(dataset)
    logits = logits[:, -1, :]
    neuron_acts = cache["post", 0, "mlp"][:, -1, :]
    approx_neuron_acts = torch.zeros_like(neuron_acts)
    # approx_neuron_acts += neuron_acts.mean(dim=0)
''' + _indent(_PROJECT) + '''    excluded_neuron_acts = neuron_acts - approx_neuron_acts
    residual_stream_final = excluded_neuron_acts @ model.blocks[0].mlp.W_out + cache["resid_mid", 0][:, -1, :]
    excluded_logits = residual_stream_final @ model.unembed.W_U
    return loss_fn(excluded_logits[train_indices], train_labels)
get_excluded_loss(model)''')


CELLS = [
    ("attention a -> =", 'imshow(cache["pattern", 0][:, 0, -1, 0].reshape(p, p), title="Attention for Head 0 from a -> =", xaxis="b", yaxis="a")', None),
    ("attention per head", '''imshow(
    einops.rearrange(cache["pattern", 0][:, :, -1, 0], "(a b) head -> head a b", a=p, b=p),
    title="Attention for Head 0 from a -> =", xaxis="b", yaxis="a", facet_col=0)''', None),
    ("post shape", 'cache["post", 0, "mlp"].shape', None),
    ("first 5 neuron acts", '''imshow(
    einops.rearrange(neuron_acts[:, :5], "(a b) neuron -> neuron a b", a=p, b=p),
    title="First 5 neuron acts", xaxis="b", yaxis="a", facet_col=0)''', None),
    ("W_E shape", "W_E.shape", None),
    ("SVD", '''U, S, Vh = torch.svd(W_E)
line(S, title="Singular Values")
imshow(U, title="Principal Components on the Input")''', None),
    ("SVD control", '''# Control - random Gaussian matrix
U, S, Vh = torch.svd(torch.randn_like(W_E))
line(S, title="Singular Values Random")
imshow(U, title="Principal Components Random")''', None),
    ("embedding PCs", '''U, S, Vh = torch.svd(W_E)
line(U[:, :8].T, title="Principal Components of the embedding", xaxis="Input Vocabulary")''', None),
    ("fourier basis", FOURIER_BASIS, None),
    ("orthogonal", 'imshow(fourier_basis @ fourier_basis.T, title="All Fourier Vectors are Orthogonal")', None),
    ("embedding in Fourier basis", 'imshow(fourier_basis @ W_E, yaxis="Fourier Component", xaxis="Residual Stream", y=fourier_basis_names, title="Embedding in Fourier Basis")', None),
    ("embedding norms", 'line((fourier_basis @ W_E).norm(dim=-1), xaxis="Fourier Component", x=fourier_basis_names, title="Norms of Embedding in Fourier Basis")', None),
    ("key freqs", KEY_FREQS_CELL, RUN_FREQS + " and their sin/cos rows"),
    ("constructive interference", 'line(fourier_basis[[2 * f for f in key_freqs]].mean(0), title="Constructive Interference")',
     "the run's key frequencies' cos rows in place of [34, 50, 64, 94]"),
    ("first 5 neuron acts again", '''imshow(
    einops.rearrange(neuron_acts[:, :5], "(a b) neuron -> neuron a b", a=p, b=p),
    title="First 5 neuron acts", xaxis="b", yaxis="a", facet_col=0)''', None),
    ("first neuron act", '''imshow(
    einops.rearrange(neuron_acts[:, 0], "(a b) -> a b", a=p, b=p),
    title="First neuron act", xaxis="b", yaxis="a",)''', None),
    ("cos a * cos b", 'imshow(fourier_basis[2 * key_freqs[-1]][None, :] * fourier_basis[2 * key_freqs[-1]][:, None], title="Cos 47a * cos 47b")',
     "the run's last key frequency's cos row in place of 94 (cos 47)"),
    ("cos a * const", 'imshow(fourier_basis[2 * key_freqs[-1]][None, :] * fourier_basis[0][:, None], title="Cos 47a * const")',
     "the run's last key frequency's cos row in place of 94 (cos 47)"),
    ("2D FT neuron 0", 'imshow(fourier_basis @ neuron_acts[:, 0].reshape(p, p) @ fourier_basis.T, title="2D Fourier Transformer of neuron 0", xaxis="b", yaxis="a", x=fourier_basis_names, y=fourier_basis_names)', None),
    ("2D FT neuron 5", 'imshow(fourier_basis @ neuron_acts[:, 5].reshape(p, p) @ fourier_basis.T, title="2D Fourier Transformer of neuron 5", xaxis="b", yaxis="a", x=fourier_basis_names, y=fourier_basis_names)', None),
    ("2D FT random", 'imshow(fourier_basis @ torch.randn_like(neuron_acts[:, 0]).reshape(p, p) @ fourier_basis.T, title="2D Fourier Transformer of RANDOM", xaxis="b", yaxis="a", x=fourier_basis_names, y=fourier_basis_names)', None),
    ("fourier neuron acts", '''fourier_neuron_acts = fourier_basis @ einops.rearrange(neuron_acts, "(a b) neuron -> neuron a b", a=p, b=p) @ fourier_basis.T
# Center these by removing the mean - doesn't matter!
fourier_neuron_acts[:, 0, 0] = 0.
print("fourier_neuron_acts", fourier_neuron_acts.shape)''', None),
    ("neuron freq norm", NEURON_FREQ_NORM, None),
    ("max frac explained", 'line(neuron_freq_norm.max(dim=0).values.sort().values, xaxis="Neuron", title="Max Neuron Frac Explained over Freqs")', None),
    ("W_logit", 'W_logit = model.blocks[0].mlp.W_out @ model.unembed.W_U\nprint("W_logit", W_logit.shape)', None),
    ("W_logit Fourier norms", 'line((W_logit @ fourier_basis.T).norm(dim=0), x=fourier_basis_names, title="W_logit in the Fourier Basis")', None),
    ("neurons_17", "neurons_17 = neuron_freq_norm[key_freqs[0]-1]>0.85\nneurons_17.shape",
     "the run's first key frequency in place of 17"),
    ("neurons_17 count", "neurons_17.sum()", None),
    ("neurons_17 W_logit", 'line((W_logit[neurons_17] @ fourier_basis.T).norm(dim=0), x=fourier_basis_names, title="W_logit for freq 17 neurons in the Fourier Basis")', None),
    ("sin 17", '''freq = key_freqs[0]
W_logit_fourier = W_logit @ fourier_basis
neurons_sin_17 = W_logit_fourier[:, 2*freq-1]
line(neurons_sin_17)''', "the run's first key frequency in place of 17"),
    ("neuron_acts shape", "neuron_acts.shape", None),
    ("sin 17 inputs", '''inputs_sin_17c = neuron_acts @ neurons_sin_17
imshow(fourier_basis @ inputs_sin_17c.reshape(p, p) @ fourier_basis.T, title="Fourier Heatmap over inputs for sin17c", x=fourier_basis_names, y=fourier_basis_names)''', None),
    ("test_logits", TEST_LOGITS, None),
    ("metric_cache", "metric_cache = {}", None),
    ("get_metrics", GET_METRICS, None),
    # the demo's phase boundaries; only its figures' dashed lines use them
    ("phase epochs", "memorization_end_epoch = 1500\ncircuit_formation_end_epoch = 13300\ncleanup_end_epoch = 16600", None),
    ("add_lines", '''def add_lines(figure):
    figure.add_vline(memorization_end_epoch, line_dash="dash", opacity=0.7)
    figure.add_vline(circuit_formation_end_epoch, line_dash="dash", opacity=0.7)
    figure.add_vline(cleanup_end_epoch, line_dash="dash", opacity=0.7)
    return figure''', None),
    ("all_logits", '''all_logits = original_logits[:, -1, :]
print(all_logits.shape)
all_logits = einops.rearrange(all_logits, "(a b) c -> a b c", a=p, b=p)
print(all_logits.shape)''', None),
    ("coses", '''coses = {}
for freq in key_freqs:
    print("Freq:", freq)
    a = torch.arange(p)[:, None, None]
    b = torch.arange(p)[None, :, None]
    c = torch.arange(p)[None, None, :]
    cube_predicted_logits = torch.cos(freq * 2 * torch.pi / p * (a + b - c)).to(device)
    cube_predicted_logits /= cube_predicted_logits.norm()
    coses[freq] = cube_predicted_logits''', None),
    ("approximated logits", '''approximated_logits = torch.zeros_like(all_logits)
for freq in key_freqs:
    print("Freq:", freq)
    coeff = (all_logits * coses[freq]).sum()
    print("Coeff:", coeff)
    cosine_sim = coeff / all_logits.norm()
    print("Cosine Sim:", cosine_sim)
    approximated_logits += coeff * coses[freq]
residual = all_logits - approximated_logits
print("Residual size:", residual.norm())
print("Residual fraction of norm:", residual.norm()/all_logits.norm())''', None),
    ("random cube", '''random_logit_cube = torch.randn_like(all_logits)
print((all_logits * random_logit_cube).sum()/random_logit_cube.norm()/all_logits.norm())''', None),
    ("test_logits(all_logits)", "test_logits(all_logits)", None),
    ("test_logits(approximated_logits)", "test_logits(approximated_logits)", None),
    ("cos_cube", '''cos_cube = []
for freq in range(1, p//2 + 1):
    a = torch.arange(p)[:, None, None]
    b = torch.arange(p)[None, :, None]
    c = torch.arange(p)[None, None, :]
    cube_predicted_logits = torch.cos(freq * 2 * torch.pi / p * (a + b - c)).to(device)
    cube_predicted_logits /= cube_predicted_logits.norm()
    cos_cube.append(cube_predicted_logits)
cos_cube = torch.stack(cos_cube, dim=0)
print(cos_cube.shape)''', None),
    ("cos coeffs", '''def get_cos_coeffs(model):
    logits = model(dataset)[:, -1]
    logits = einops.rearrange(logits, "(a b) c -> a b c", a=p, b=p)
    vals = (cos_cube * logits[None, :, :, :]).sum([-3, -2, -1])
    return vals


get_metrics(model, metric_cache, get_cos_coeffs, "cos_coeffs")
print(metric_cache["cos_coeffs"].shape)''', None),
    ("cos sim", '''def get_cos_sim(model):
    logits = model(dataset)[:, -1]
    logits = einops.rearrange(logits, "(a b) c -> a b c", a=p, b=p)
    vals = (cos_cube * logits[None, :, :, :]).sum([-3, -2, -1])
    return vals / logits.norm()

get_metrics(model, metric_cache, get_cos_sim, "cos_sim") # You may need a big GPU. If you don't have one and can't work around this, raise an issue for help!
print(metric_cache["cos_sim"].shape)''', PLOT_DROPPED),
    ("residual cos sim", '''def get_residual_cos_sim(model):
    logits = model(dataset)[:, -1]
    logits = einops.rearrange(logits, "(a b) c -> a b c", a=p, b=p)
    vals = (cos_cube * logits[None, :, :, :]).sum([-3, -2, -1])
    residual = logits - (vals[:, None, None, None] * cos_cube).sum(dim=0)
    return residual.norm() / logits.norm()

get_metrics(model, metric_cache, get_residual_cos_sim, "residual_cos_sim")
print(metric_cache["residual_cos_sim"].shape)''', PLOT_DROPPED),
    ("neuron_acts shape again", "neuron_acts.shape", None),
    ("neuron acts by Fourier component", '''neuron_acts_square = einops.rearrange(neuron_acts, "(a b) neur -> a b neur", a=p, b=p).clone()
# Center it
neuron_acts_square -= einops.reduce(neuron_acts_square, "a b neur -> 1 1 neur", "mean")
neuron_acts_square_fourier = einsum("a b neur, fa a, fb b -> fa fb neur", neuron_acts_square, fourier_basis, fourier_basis)
imshow(neuron_acts_square_fourier.norm(dim=-1), xaxis="Fourier Component b", yaxis="Fourier Component a", title="Norms of neuron activations by Fourier Component", x=fourier_basis_names, y=fourier_basis_names)''', None),
    ("run_with_cache again", '''original_logits, cache = model.run_with_cache(dataset)
print(original_logits.numel())
neuron_acts = cache["post", 0, "mlp"][:, -1, :]''', None),
    ("restricted loss", RESTRICTED, None),
    ("full loss", "print(loss_fn(original_logits, labels))", None),
    ("get_restricted_loss", GET_RESTRICTED_LOSS, None),
    ("restricted loss over checkpoints", '''get_metrics(model, metric_cache, get_restricted_loss, "restricted_loss", reset=True)
print(metric_cache["restricted_loss"].shape)''', None),
    ("excluded loss", EXCLUDED, None),
    ("get_excluded_loss", GET_EXCLUDED_LOSS, None),
    ("excluded loss over checkpoints", '''get_metrics(model, metric_cache, get_excluded_loss, "excluded_loss", reset=True)
print(metric_cache["excluded_loss"].shape)''', None),
]

PLOT_EMBED_BARS = '''def embed_to_cos_sin(fourier_embed):
    if len(fourier_embed.shape) == 1:
        return torch.stack([fourier_embed[1::2], fourier_embed[2::2]])
    else:
        return torch.stack([fourier_embed[:, 1::2], fourier_embed[:, 2::2]], dim=1)

from neel_plotly.plot import melt

def plot_embed_bars(
    fourier_embed,
    title="Norm of embedding of each Fourier Component",
    return_fig=False,
    **kwargs
):
    cos_sin_embed = embed_to_cos_sin(fourier_embed)
    df = melt(cos_sin_embed)
    # display(df)
    group_labels = {0: "sin", 1: "cos"}
    df["Trig"] = df["0"].map(lambda x: group_labels[x])
    fig = px.bar(
        df,
        barmode="group",
        color="Trig",
        x="1",
        y="value",
        labels={"1": "$w_k$", "value": "Norm"},
        title=title,
        **kwargs
    )
    fig.update_layout(dict(legend_title=""))

    if return_fig:
        return fig
    else:
        fig.show()'''

_LOSSES = '[train_losses[::100], test_losses[::100]'
_X = 'x=np.arange(0, len(train_losses), 100), xaxis="Epoch", yaxis="Loss", log_y=True'

# (name, source, reason), each where the demo has it: after the Fourier basis, after the key frequencies, after the
# sin 17 heatmap, after add_lines, after the cos coefficients, and the three loss curves after their get_metrics cells
IMPOSSIBLE = [
    ("first 8 Fourier components", 'line(fourier_basis[:8], xaxis="Input", line_labels=fourier_basis_names[:8], title="First 8 Fourier Components")\n'
     'line(fourier_basis[25:29], xaxis="Input", line_labels=fourier_basis_names[25:29], title="Middle Fourier Components")', NEEL_PLOTLY),
    ("cos of key freqs", 'line(fourier_basis[[34, 50, 64, 94]], title="Cos of key freqs", line_labels=[34, 50, 64, 94])',
     NEEL_PLOTLY + " (and 113\'s rows)"),
    ("plot_embed_bars", PLOT_EMBED_BARS, NEEL_PLOTLY),
    ("training curve with phase lines", f'fig = line({_LOSSES}], {_X}, title="Training Curve for Modular Addition", '
     "line_labels=[\'train\', \'test\'], toggle_x=True, toggle_y=True, return_fig=True)\nadd_lines(fig)", NEEL_PLOTLY),
    ("cos coeffs figure", 'fig = line(metric_cache["cos_coeffs"].T, line_labels=[f"Freq {i}" for i in range(1, p//2+1)], '
     'title="Coefficients with Predicted Logits", xaxis="Epoch", x=checkpoint_epochs, yaxis="Coefficient", '
     'return_fig=True)\nadd_lines(fig)', NEEL_PLOTLY),
    ("restricted loss curve", f'fig = line({_LOSSES}, metric_cache["restricted_loss"]], {_X}, title="Restricted Loss '
     'Curve", line_labels=[\'train\', \'test\', "restricted_loss"], toggle_x=True, toggle_y=True, return_fig=True)\n'
     'add_lines(fig)', NEEL_PLOTLY),
    ("restricted to test loss ratio", 'fig = line([torch.tensor(test_losses[::100])/metric_cache["restricted_loss"]], '
     f'{_X}, title="Restricted Loss to Test Loss Ratio", toggle_x=True, toggle_y=True, return_fig=True)\n'
     '# WARNING: bugged when cancelling training half way thr ough\nadd_lines(fig)', NEEL_PLOTLY),
    ("excluded and restricted loss curve", f'fig = line({_LOSSES}, metric_cache["excluded_loss"], '
     f'metric_cache["restricted_loss"]], {_X}, title="Excluded and Restricted Loss Curve", line_labels=[\'train\', '
     '\'test\', "excluded_loss", "restricted_loss"], toggle_x=True, toggle_y=True, return_fig=True)\n\nadd_lines(fig)',
     NEEL_PLOTLY),
]
