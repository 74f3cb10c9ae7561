"""A word-level tokenizer built in-process (no downloads): <pad> 0, <s> 1, </s> 2, <unk> 3, then the words."""

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

WORDS = (
    "a chat between curious user and an artificial intelligence assistant the gives helpful detailed polite "
    "answers to 's questions USER ASSISTANT : . ? what colour is shape red green blue circle square moving "
    "left right up down how many objects are there in video image one two three"
).split()


def word_tokenizer(size: int) -> PreTrainedTokenizerFast:
    """Exactly `size` tokens: the specials, WORDS, then filler words w0, w1, ..."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *dict.fromkeys(WORDS)])}
    vocab.update({f"w{i}": len(vocab) + i for i in range(size - len(vocab))})
    assert len(vocab) == size
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
