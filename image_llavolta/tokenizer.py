"""A word-level tokenizer built from a data set's own text, for tiny demo models (no download, milliseconds).

Ids: <pad> 0, <s> 1, </s> 2, <unk> 3, the words in first-seen order, then <image> and <video> last, which is
where the tiny configs put the placeholder ids (vocab_size - 2 and vocab_size - 1).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PLACEHOLDERS = ("<image>", "<video>")


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A whitespace/punctuation word tokenizer whose vocabulary is every word of `texts`."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = dict.fromkeys(SPECIALS)
    for text in texts:
        for p in PLACEHOLDERS:
            text = text.replace(p, " ")
        words.update(dict.fromkeys(w for w, _ in pre.pre_tokenize_str(text)))
    vocab = {w: i for i, w in enumerate([*words, *PLACEHOLDERS])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(PLACEHOLDERS),
    )
    return tokenizer
