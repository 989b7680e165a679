"""How tests/data/lpips_vgg16_layout.json was made (not run by the tests).

The expected names/shapes come from outside our code: torchvision's own vgg16 (its `features.*`, the layout of
vgg16-397923af.pth) and the lpips package's released heads file lpips/weights/v0.1/vgg.pth. The reference values are
the lpips package's forward pass (LPIPS(net='vgg'), normalize=True) with the stand-in weights and images that
tests/test_titok_lpips.py builds (standin_lpips, standin_images), so our LPIPS is checked numerically without the
package installed (the package is not a dependency: its backbone would come from a hub download).

    pip download lpips==0.1.4 --no-deps -d /tmp/lpips_dl && unzip /tmp/lpips_dl/*.whl -d /tmp/lpips_dl/x
    PYTHONPATH=/tmp/lpips_dl/x:.:tests python tests/data/make_lpips_fixture.py
"""
import hashlib
import json

import torch
import torchvision

import lpips as L
from pathlib import Path
from test_titok_lpips import standin_lpips, standin_images
heads_file = str(Path(L.__file__).parent / 'weights/v0.1/vgg.pth')
heads = torch.load(heads_file, weights_only=True, map_location='cpu')
with torch.device('meta'):
    vgg = torchvision.models.vgg16()
feats = {k: list(v.shape) for k, v in vgg.state_dict().items() if k.startswith('features.')}
layout = {**feats, **{k: list(v.shape) for k, v in heads.items()}}
w = standin_lpips(layout)
ref = L.LPIPS(net='vgg', pretrained=True, pnet_rand=True, model_path=heads_file, verbose=False).eval()
ref.load_state_dict({k: w[k] for k in heads}, strict=False)
ref.net.load_state_dict({k: w[f"features.{k.split('.')[1]}.{k.split('.')[2]}"] for k in ref.net.state_dict()})
a, b = standin_images()
with torch.no_grad():
    val = ref(a, b, normalize=True).flatten().tolist()
    same = ref(a, a, normalize=True).flatten().tolist()
fx = {
  "_source": ("LPIPS-VGG state-dict layout. vgg16_features: torchvision.models.vgg16() `features.*` (torchvision 0.29.1, "
              "built on the meta device), which lpips' pretrained_networks.vgg16 slices at 4/9/16/23/30 and which "
              "torchvision's vgg16-397923af.pth holds (besides classifier.*). lpips_heads: the keys and shapes of "
              "lpips==0.1.4's lpips/weights/v0.1/vgg.pth (read from the PyPI wheel; NetLinLayer = Dropout + 1x1 conv, "
              "so `.model.1.`). reference: LPIPS of standin_images() under standin_lpips() weights computed by the "
              "lpips 0.1.4 package itself (LPIPS(net='vgg', pnet_rand=True), normalize=True), float32 CPU."),
  "lpips_heads_sha256_in_wheel": hashlib.sha256(open(heads_file, 'rb').read()).hexdigest(),
  "vgg16_features": feats,
  "lpips_heads": {k: list(v.shape) for k, v in heads.items()},
  "reference": {"lpips": val, "lpips_same_images": same},
}
json.dump(fx, open('tests/data/lpips_vgg16_layout.json', 'w'), indent=1)
print(val, same)
