"""Prompts: the task's question, the label words, the model's turn opened with the answer prefix, and no system
turn unless a config asks for one."""

from transformers import AutoTokenizer

from shala_pl.data.prompts import PromptSettings, label_continuations, render_prompt, verbalizer_words

# SmolLM2-Instruct's template: it writes its own system turn when the messages have none.
TEMPLATE_WITH_DEFAULT_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PAIR = {"premise": "A man plays a guitar.", "hypothesis": "A person makes music."}
NLI_LABELS = ["entailment", "neutral", "contradiction"]


def smollm_like_tokenizer(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = TEMPLATE_WITH_DEFAULT_SYSTEM
    return tokenizer


def test_a_templates_built_in_system_prompt_stays_out(tiny_model_dir):
    tokenizer = smollm_like_tokenizer(tiny_model_dir)
    words = verbalizer_words(NLI_LABELS, PromptSettings(), "nli")
    text = render_prompt("nli", PAIR, words, PromptSettings(), tokenizer)
    assert "SmolLM" not in text and text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    asked = render_prompt("nli", PAIR, words, PromptSettings(system_prompt="You label NLI pairs."), tokenizer)
    assert asked.startswith("<|im_start|>system\nYou label NLI pairs.<|im_end|>")


def test_nli_defaults_to_yes_maybe_no_after_the_answer_prefix(tiny_model_dir):
    settings = PromptSettings()
    words = verbalizer_words(NLI_LABELS, settings, "nli")
    assert words == ["yes", "maybe", "no"]
    assert label_continuations(words, settings, "nli") == [" yes", " maybe", " no"]
    assert label_continuations(["red"], settings, "generic") == ["red"]  # other tasks open no prefix by default
    text = render_prompt("nli", PAIR, words, settings, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert text.endswith("Reply with one word: yes, maybe, or no.<|im_end|>\n<|im_start|>assistant\nAnswer:")
    # other tasks say their label names; a config's words win over the task's
    assert verbalizer_words(["joy", "anger"], settings, "emotion_reddit") == ["joy", "anger"]
    assert verbalizer_words(NLI_LABELS, PromptSettings(verbalizers={"neutral": "unsure"}), "nli")[1] == "unsure"


def test_reasoning_prompts_leave_the_models_turn_open():
    settings = PromptSettings(reasoning=True)
    assert label_continuations(["yes", "no"], settings) == ["yes", "no"]
    text = render_prompt("generic", {"text": "x"}, ["yes", "no"], settings, tokenizer=None)
    assert text.endswith("inside <answer></answer>.\n")
    assert label_continuations(["yes"], PromptSettings(answer_prefix="Label: ")) == ["yes"]
