import pytest

from backend.labelstudio.config import LabelConfigError, bundle_key, parse_label_config
from tests.conftest import SENTIMENT_XML, captured


def test_captured_config_has_a_single_and_a_multiple_choice_control():
    space = parse_label_config(captured("POST /setup (no auth)")["schema"])
    by_name = {c.name: c for c in space.controls}
    assert by_name["sentiment"].labels == ("Positive", "Negative", "Neutral")
    assert not by_name["sentiment"].multiple
    assert by_name["topics"].multiple and by_name["topics"].labels == ("Sports", "Politics", "Tech")
    assert {c.to_name for c in space.controls} == {"text"}
    assert {c.data_key for c in space.controls} == {"text"}
    assert space.unsupported == ()


def test_bundle_key_ignores_order_case_and_control_name():
    assert bundle_key(["Positive", "Negative", "Neutral"], False) == bundle_key(["neutral", "POSITIVE", "negative"],
                                                                                False)
    assert bundle_key(["a", "b"], False) != bundle_key(["a", "b"], True)
    assert len(bundle_key([f"label number {i}" for i in range(50)], False)) < 100


def test_alias_and_data_key():
    space = parse_label_config(
        '<View><Text name="body" value="$review"/><Choices name="c" toName="body">'
        '<Choice value="Good" alias="good"/><Choice value="Bad"/></Choices></View>')
    (c,) = space.controls
    assert c.labels == ("good", "Bad") and c.data_key == "review" and c.to_name == "body"


def test_unsupported_controls_are_named_next_to_supported_ones():
    space = parse_label_config(SENTIMENT_XML.replace(
        "</View>", '<Labels name="ner" toName="text"><Label value="PER"/></Labels></View>'))
    assert [c.name for c in space.controls] == ["sentiment"]
    assert any("ner" in u and "Labels" in u for u in space.unsupported)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("", "empty"),
        ("<View><Text name='t' value='$t'", "not valid"),
        ('<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="A"/><Choice value="B"/>'
         "</Choices></View>", "<Text>"),
        ('<View><Text name="t" value="$t"/><Labels name="ner" toName="t"><Label value="PER"/></Labels></View>',
         "Labels"),
        ('<View><Text name="t" value="$t"/><Choices name="c" toName="t" value="$opts"/></View>', "task data"),
        ('<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="A"/></Choices></View>',
         "two"),
    ],
)
def test_configs_we_cannot_predict_raise_with_a_reason(config, needle):
    with pytest.raises(LabelConfigError, match=needle):
        parse_label_config(config)
