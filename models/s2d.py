"""The S2D network: a frozen ViT whose blocks get landmark prompts (MCP) and temporal updates (TMA).

`S2DNet` holds exactly the parameters of the official checkpoints (419 tensors for ViT-B and 7 classes) under the
official names. `S2DModel` puts the frozen MobileFaceNet beside it (not inside its state-dict namespace) and takes
only the normalised RGB clip.

Shapes: B clips of T frames, N = B*T frames, L = 196 patch tokens (+1 CLS), D = width, C_l = 128 landmark channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .config import S2DConfig
from .mcp import PromptBlock, PromptPatchEmbed
from .mobilefacenet import LandmarkFeatureExtractor
from .tma import TemporalModelingAdapter
from .vit import Block, PatchEmbed

# The official freeze rule: a parameter is trained iff its name contains one of these.
TRAINABLE_NAME_PARTS = ("temporal_embedding", "ln_post", "head", "Adapter", "prompt")


def is_trainable_name(name: str) -> bool:
    return any(part in name for part in TRAINABLE_NAME_PARTS)


def sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions as in MAE, with a zero row for the CLS token: [1, 1 + grid^2, D]."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.flatten().double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE: first half of the channels encodes the column (w), second half the row (h)
    table = torch.cat([encode(cols), encode(rows)], dim=1).float()
    return torch.cat([torch.zeros(1, embed_dim), table], dim=0)[None]


class ClassifierHead(nn.Module):
    """Mean of the per-frame CLS features over time -> dropout -> linear (official I3DHead, name `fc_cls`)."""

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(dim, num_classes)

    def forward(self, frame_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.dropout(frame_features.mean(dim=1))  # [B, T, D] -> [B, D]
        return self.fc_cls(pooled), pooled


class S2DNet(nn.Module):
    def __init__(self, config: S2DConfig):
        super().__init__()
        self.config = config
        dim, tokens = config.embed_dim, config.num_patches + 1
        # Own parameters first, then sub-modules, in the official order, so state_dict() lists keys like theirs.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim), requires_grad=False)  # fixed positions
        if config.temporal:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, dim))
        else:
            self.temporal_embedding = None
        self.patch_embed = PatchEmbed(config.img_size, config.patch_size, 3, dim)
        self.patch_embed_prompt = PromptPatchEmbed(config.landmark_channels, dim)
        self.prompt_blocks = nn.ModuleList([self._make_prompt_block(config) for _ in range(config.depth)])
        self.prompt_norms = nn.ModuleList([nn.LayerNorm(dim, eps=config.norm_eps) for _ in range(config.depth)])
        self.blocks = nn.ModuleList(
            [Block(dim, config.num_heads, config.mlp_ratio, config.norm_eps) for _ in range(config.depth)]
        )
        self.ln_post = nn.LayerNorm(dim, eps=config.norm_eps)
        self.head = ClassifierHead(dim, config.num_classes, config.head_dropout)
        self.grad_checkpointing = False
        # 0 on the CLS row, 1 on the patch rows: the blocks' prompt and temporal updates reach only the patches.
        patch_rows = torch.ones(1, tokens, 1)
        patch_rows[:, 0] = 0
        self.register_buffer("patch_rows", patch_rows, persistent=False)  # not a checkpoint tensor
        self.init_weights()

    @staticmethod
    def _make_prompt_block(config: S2DConfig) -> PromptBlock:
        tma = None
        if config.temporal:
            tma = TemporalModelingAdapter(config.embed_dim, config.adapter_dim, config.adapter_heads)
        return PromptBlock(config.embed_dim, config.prompt_hidden_dim, tma)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh initialisation as in the official code (used when no checkpoint provides the weights)."""
        for module in self.prompt_blocks.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.temporal_embedding is not None:
            nn.init.trunc_normal_(self.temporal_embedding, std=0.02)
        # The released models take fixed sin-cos positions from their MAE initialisation; do the same from scratch.
        self.pos_embed.copy_(sincos_pos_embed(self.config.embed_dim, self.config.grid_size))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def freeze_backbone(self) -> None:
        """Apply the official rule: train only temporal embedding, ln_post, head, adapters and prompters."""
        for name, param in self.named_parameters():
            param.requires_grad_(is_trainable_name(name))

    def unfreeze_backbone(self) -> None:
        """Train the whole ViT too (a static stage without a pre-trained ViT); positions stay fixed (sin-cos)."""
        for name, param in self.named_parameters():
            param.requires_grad_(name != "pos_embed")

    def disable_temporal_modelling(self) -> None:
        """The ablation without temporal modelling: no TMAs, and no frame positions for them to use (a zero, frozen
        temporal embedding), so the clip becomes a bag of frames: the model is exactly invariant to frame order."""
        for block in self.prompt_blocks:
            block.TMA = None
        if self.temporal_embedding is not None:
            self.temporal_embedding.data.zero_()
            self.temporal_embedding.requires_grad_(False)

    def forward(self, clip: torch.Tensor, landmark_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official signature: normalised clip [B, 3, T, H, W] and landmark maps [B*T, C_l, 14, 14]."""
        batch, channels, frames, height, width = clip.shape
        frames_first = clip.transpose(1, 2).reshape(batch * frames, channels, height, width)
        return self.forward_frames(frames_first, landmark_feat, batch)

    def forward_frames(
        self, frames: torch.Tensor, landmark_feat: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B*T, 3, H, W] (clip-major), landmark maps [B*T, C_l, 14, 14] -> logits [B, C], features [B, D]."""
        cls = self.forward_features(frames, landmark_feat)  # [B*T, D]
        return self.head(cls.view(batch, -1, cls.shape[-1]))

    def forward_features(self, frames: torch.Tensor, landmark_feat: torch.Tensor) -> torch.Tensor:
        """Per-frame CLS features after ln_post: [B*T, D]."""
        num_frames = self.config.num_frames
        x = self.patch_embed(frames)  # [N, L, D]
        a = self.patch_embed_prompt(landmark_feat)  # [N, L, D]
        norm0 = self.prompt_norms[0]
        # Block 0's prompt acts on the raw patch tokens, before the CLS token and the positions are added.
        prompt, temporal = self.prompt_blocks[0](norm0(x), norm0(a), num_frames)
        x = x + prompt if temporal is None else x + temporal + prompt
        # The landmark stream is recursive: each prompt feeds the next block. From block 1 on the prompt steps run
        # on all 1 + L rows (`_stage`), so the stream gets a (zero) CLS row too.
        a = F.pad(prompt, (0, 0, 1, 0))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # [N, 1+L, D]
        if self.temporal_embedding is not None:
            n, tokens, dim = x.shape
            x = x.view(-1, num_frames, tokens, dim) + self.temporal_embedding.view(1, num_frames, 1, dim)
            x = x.view(n, tokens, dim)  # every token of frame t gets temporal_embedding[t]
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x, a = torch.utils.checkpoint.checkpoint(self._stage, i, x, a, use_reentrant=False)
            else:
                x, a = self._stage(i, x, a)
        return self.ln_post(x[:, 0])  # LayerNorm is per token: normalising only the CLS token is the same

    def _stage(self, i: int, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt step (from block 1 on) followed by ViT block i."""
        if i > 0:
            # The CLS token is untouched; the un-normalised patch tokens receive the updates. The updates are
            # computed on every row and masked on the CLS row: the same values as cutting the patch rows out and
            # joining them back, without copying the token tensor twice per block.
            rgb, landmark = self.prompt_norms[i - 1](x), self.prompt_norms[0](a)
            prompt, temporal = self.prompt_blocks[i](rgb, landmark, self.config.num_frames, first_row_is_cls=True)
            update = prompt if temporal is None else temporal + prompt
            x = x + update * self.patch_rows
            a = prompt
        if i == len(self.blocks) - 1:
            # Only the CLS row of the last block is read (forward_features): the other rows are not computed.
            return self.blocks[i].forward_first_token(x), a
        return self.blocks[i](x), a


class S2DModel(nn.Module):
    """S2D with its landmark network: normalised RGB clip [B, 3, T, 224, 224] -> (logits [B, C], features [B, D]).

    The static (image) model also accepts images [B, 3, 224, 224].
    """

    def __init__(self, config: S2DConfig):
        super().__init__()
        self.config = config
        self.s2d = S2DNet(config)
        self.landmark = LandmarkFeatureExtractor()

    def forward(self, clip: torch.Tensor, landmarks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`landmarks`: `landmark_features(clip)` when the caller has them already. The landmark network is frozen,
        so a training loop that sees the same inputs many times computes them once (training.demo.fit)."""
        frames_first, batch = self._frames_first(clip)
        features = self.landmark(frames_first) if landmarks is None else landmarks.flatten(0, 1)
        return self.s2d.forward_frames(frames_first, features, batch)

    @torch.no_grad()
    def landmark_features(self, clip: torch.Tensor) -> torch.Tensor:
        """The landmark network's features of a clip's frames: [B, T, 128, 14, 14]."""
        frames_first, batch = self._frames_first(clip)
        return self.landmark(frames_first).unflatten(0, (batch, -1))

    def _frames_first(self, clip: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A checked clip [B, 3, T, H, W] as its frames [B*T, 3, H, W], and B."""
        clip = self._checked(clip)
        batch, channels, frames, height, width = clip.shape
        return clip.transpose(1, 2).reshape(batch * frames, channels, height, width), batch

    def _checked(self, clip: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if clip.dim() == 4 and not cfg.temporal:
            clip = clip.unsqueeze(2)  # images -> one-frame clips
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(f"expected a normalised RGB clip [B, 3, T, H, W], got shape {tuple(clip.shape)}")
        if clip.shape[2] != cfg.num_frames:
            raise ValueError(
                f"{cfg.name} takes clips of exactly {cfg.num_frames} frames (a model property), "
                f"got {clip.shape[2]}; sample or pad the clip to {cfg.num_frames} frames"
            )
        if clip.shape[-2:] != (cfg.img_size, cfg.img_size):
            raise ValueError(f"expected {cfg.img_size}x{cfg.img_size} frames, got {tuple(clip.shape[-2:])}")
        return clip

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.s2d.set_grad_checkpointing(enable)


def count_parameters(net: S2DNet) -> tuple[int, int]:
    """(total, trainable-by-the-official-rule) parameters of the S2D network, landmark network excluded."""
    total = trainable = 0
    for name, param in net.named_parameters():
        total += param.numel()
        trainable += param.numel() if is_trainable_name(name) else 0
    return total, trainable


def clip_flops(config: S2DConfig) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one clip, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = S2DModel(config).eval()
        clip = torch.empty(1, 3, config.num_frames, config.img_size, config.img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(clip)
    by_module = counter.get_flop_counts()
    total = float(sum(by_module.get("Global", {}).values()))
    landmark = float(sum(by_module.get("S2DModel.landmark", {}).values()))
    return {"total": total, "s2d": total - landmark, "landmark": landmark}
