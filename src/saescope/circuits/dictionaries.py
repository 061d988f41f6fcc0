"""Which dictionaries a circuit is found over, and reloading them for a saved circuit.

``load_dictionaries("default")`` is the shipped suite of the embedded model (``sae.suite``); a suite
folder (``suite.json``) or comma-separated SAE folders work too, optionally restricted to some
layers; ``components=True`` puts the model's own basis (``IdentityDictionary``) at the same hook
points, for the component-level baseline. A saved circuit records each hook point's source and SAE
fingerprint; ``dictionaries_for`` reloads them and refuses SAEs that changed since.
"""

from __future__ import annotations

from pathlib import Path

from saescope.circuits.graph import Circuit
from saescope.circuits.nodes import Dictionary, IdentityDictionary
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE, sae_fingerprint
from saescope.sae.formats import load_sae
from saescope.sae.suite import SUITE_FILE, load_suite

IDENTITY = "identity"


def load_dictionaries(spec: str, lm: LoadedModel, layers: list[int] | None = None,
                      components: bool = False) -> dict[str, Dictionary]:
    """``{hook: dictionary}`` from ``"default"``, a suite folder, or comma-separated SAE folders."""
    if spec == "default" or (Path(spec).expanduser() / SUITE_FILE).exists():
        saes: dict[str, SAE] = load_suite(spec, device=str(lm.device))
    else:
        saes = {}
        for path in [p.strip() for p in spec.split(",") if p.strip()]:
            sae = load_sae(path, device=str(lm.device))
            if not sae.cfg.hook_name:
                raise SaescopeError(f"the SAE in {path} does not name its hook point (cfg.json metadata.hook_name)")
            saes[sae.cfg.hook_name] = sae
    if layers is not None:
        wanted = {f"blocks.{layer}.hook_resid_post" for layer in layers}
        missing = wanted - saes.keys()
        if missing:
            raise SaescopeError(f"no SAE for {', '.join(sorted(missing))} in {spec!r} (it has {', '.join(saes)})")
        saes = {hook: sae for hook, sae in saes.items() if hook in wanted}
    if not saes:
        raise SaescopeError(f"no SAEs in {spec!r}")
    if components:
        return {hook: IdentityDictionary(lm.d_model, hook) for hook in saes}
    return dict(saes)


def describe(dictionary: Dictionary) -> dict[str, str]:
    """What a circuit records of a dictionary: where it came from and its fingerprint."""
    if isinstance(dictionary, IdentityDictionary):
        return {"source": IDENTITY, "fingerprint": f"d={dictionary.d_in}"}
    return {"source": str(dictionary.cfg.metadata.get("source", "")), "fingerprint": sae_fingerprint(dictionary)}


def dictionaries_for(circuit: Circuit, lm: LoadedModel) -> dict[str, Dictionary]:
    """Reload the dictionaries ``circuit`` was found over, checking their fingerprints."""
    out: dict[str, Dictionary] = {}
    for hook in circuit.hooks:
        info = circuit.saes.get(hook)
        if not isinstance(info, dict) or "source" not in info:
            raise SaescopeError(f"the circuit does not say which SAE it used at {hook} (field saes.{hook}.source)")
        if info["source"] == IDENTITY:
            out[hook] = IdentityDictionary(lm.d_model, hook)
            continue
        if not info["source"]:
            raise SaescopeError(f"the circuit's SAE at {hook} was built in memory: pass the SAEs to the API instead")
        sae = load_sae(info["source"], device=str(lm.device))
        if sae_fingerprint(sae) != info.get("fingerprint"):
            raise SaescopeError(f"the SAE at {info['source']} is not the one the circuit was found with "
                                f"(fingerprint {sae_fingerprint(sae)} != {info.get('fingerprint')})")
        out[hook] = sae
    for node in circuit.nodes:
        if not node.is_error and node.index >= out[node.hook].d_sae:
            raise SaescopeError(f"node {node.key} is out of range: the dictionary at {node.hook} has "
                                f"{out[node.hook].d_sae} features (0-{out[node.hook].d_sae - 1})")
    return out
