"""Tiny random VLM folders of the real classes, written the way a researcher's checkpoint is laid out
(model.save_pretrained + processor.save_pretrained), for testing the `hf-vlm` preset offline.

  LLaVA     LlavaForConditionalGeneration: CLIPVisionConfig (224², patch 14 → 16×16) + LlamaConfig,
            LlavaProcessor (CLIPImageProcessor, the tokenizer, a chat template)
  Qwen2-VL  Qwen2VLForConditionalGeneration: tiny vision (patch 14, merge 2) + text configs,
            Qwen2VLProcessor (Qwen2VLImageProcessor at a fixed size, the tokenizer, a chat template)

The tokenizer is byte-level BPE without merges (tokenizers' BPE over the 256 byte symbols): any
text encodes, and no vocabulary file is needed. A plain helper module, like paper_fixtures.
"""
from __future__ import annotations

from pathlib import Path

import torch

HIDDEN = 32
LLAVA_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def byte_tokenizer(**special):
    """A fast byte-level tokenizer (256 byte symbols, no merges) with the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _perturb(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def write_llava(path: Path, seed: int = 0, image_size: int = 224) -> Path:
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = byte_tokenizer(bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                         extra_special_tokens={"image_token": "<image>"})
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=image_size, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    _perturb(LlavaForConditionalGeneration(cfg), seed).save_pretrained(path)
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1,  # CLIP's CLS, as llava-hf processors declare it
                   chat_template=LLAVA_TEMPLATE).save_pretrained(path)
    return path


def write_qwen2_vl(path: Path, seed: int = 1, image_size: int = 448) -> Path:
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = byte_tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=QWEN_SPECIALS)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=HIDDEN, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"])
    torch.manual_seed(seed)
    _perturb(Qwen2VLForConditionalGeneration(cfg), seed).save_pretrained(path)
    ip = Qwen2VLImageProcessor(size={"shortest_edge": image_size**2, "longest_edge": image_size**2})
    Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                     chat_template=QWEN_TEMPLATE).save_pretrained(path)
    return path
