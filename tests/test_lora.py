"""shared.train.lora.add_lora: the adapter on a tiny diffusers UNet, and the error for targets that match nothing."""
import pytest
import torch
from torch import nn

from shared.config import ConfigError
from shared.train.lora import add_lora


def test_add_lora_freezes_the_base_and_starts_equal_to_it():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 3, 8)
    with torch.no_grad():
        before = unet(x, t, c).sample
    params = add_lora(unet, rank=2, alpha=2, targets=["to_q", "to_k", "to_v", "to_out.0", "no_such_module"])
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names) and len(params) == len(names)
    assert any(".to_q.lora_A" in n for n in names) and any(".to_out.0.lora_B" in n for n in names)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, c).sample, before, rtol=0, atol=0)   # init=True: B = 0


def test_add_lora_refuses_targets_that_match_nothing():
    with pytest.raises(ConfigError, match="match no module of Sequential"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), rank=2, alpha=2, targets=["to_q"])
