"""Text conditioning: a CLIP tokenizer + text encoder, loaded from a folder with `tokenizer/` and `text_encoder/`.

paper: the SD folder's own CLIP (`load_text(sd_folder)`).
demo: `build_demo_text` makes a tiny `CLIPTextModel` and an offline word-level tokenizer (built with the
`tokenizers` library over the prompt vocabulary + CLIP's special tokens), saved with `save_pretrained`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from siamdiff.utils import SiamdiffError

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
# a small general vocabulary so prompts close to the default still tokenize to known words
BASE_WORDS = ("a an the of in with and image photo endoscopic endoscopy colonoscopy colon polyp polyps "
              "mucosa lesion small large medical").split()


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def build_demo_tokenizer(prompts: list[str], max_length: int = 32):
    """An offline `PreTrainedTokenizerFast`: lower-case word level, BOS/EOS added, padded with EOS (as CLIP)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab_words = sorted(set(BASE_WORDS) | {w for p in prompts for w in words_of(p)})
    vocab = {tok: i for i, tok in enumerate([BOS, EOS, UNK, *vocab_words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=EOS, model_max_length=max_length)


def build_demo_text(prompts: list[str], width: int = 64, layers: int = 2, heads: int = 4,
                    max_length: int = 32, seed: int = 0):
    """(tokenizer, CLIPTextModel) for the demo profile: tiny, randomly initialised and kept frozen (as SD's CLIP)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    if width % heads:
        raise SiamdiffError(f"params.yaml: backbone.text_width ({width}) must be divisible by {heads} heads")
    tokenizer = build_demo_tokenizer(prompts, max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=max_length, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config)


def load_text(folder: str | os.PathLike):
    """(tokenizer, text_encoder) from `folder/tokenizer` and `folder/text_encoder` (offline)."""
    from transformers import AutoTokenizer, CLIPTextModel

    folder = Path(folder)
    for sub in ("tokenizer", "text_encoder"):
        if not (folder / sub).is_dir():
            raise SiamdiffError(f"{folder / sub}: not found; expected a diffusers Stable Diffusion-layout "
                                "folder with tokenizer/ and text_encoder/")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{folder}: cannot load the CLIP tokenizer/text encoder ({e})") from e
    text_encoder.eval().requires_grad_(False)
    return tokenizer, text_encoder


def save_text(folder: str | os.PathLike, tokenizer, text_encoder) -> None:
    folder = Path(folder)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)


def encode_prompts(tokenizer, text_encoder, prompts: list[str]):
    """Last hidden states [B, L, D], as SD: padded to the tokenizer's max length, no attention mask."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]
