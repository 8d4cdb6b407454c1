"""BFCL's verdicts with the UNMODIFIED bfcl-eval package (run with the reference venv's python).

Reads JSON lines ``{"category", "functions", "possible_answer", "calls", "python"}`` from the
file named by argv[1]; writes one JSON line ``{"valid": bool, "error_type": str}`` per case
to stdout. Imports nothing from gdpo: the package's own modules, with every dependency they
import (``bfcl_eval.constants.model_config`` and its API clients included), decide:

* Python categories: ``python`` (the calls written as BFCL's prompting models write them,
  ``[f(a=1), g(b='x')]``) goes through BFCL's own decoder ``default_decode_ast_prompting``,
  then ``is_empty_output`` (relevance / irrelevance, as ``_evaluate_single_relevance_entry``)
  or ``is_function_calling_format_output`` + ``ast_checker`` (as ``_evaluate_single_ast_entry``);
* Java / JavaScript: the decoded calls ``[{name: args}]`` go to ``ast_checker`` directly
  (BFCL's Java / JS source decoders parse another output syntax than ours).

The model name handed to the checker is a prompting model of BFCL's own table with
``underscore_to_dot=False``.
"""

import json
import sys


def verdict(case):
    """BFCL's verdict on one case (the imports are here: pytest's doctest collection imports this file)."""
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting
    from bfcl_eval.utils import is_empty_output, is_function_calling_format_output

    model = next(name for name, cfg in MODEL_CONFIG_MAPPING.items()
                 if not cfg.is_fc_model and not cfg.underscore_to_dot)
    languages = {"simple_java": Language.JAVA, "simple_javascript": Language.JAVASCRIPT}
    category = case["category"]
    language = languages.get(category, Language.PYTHON)
    if language == Language.PYTHON:
        try:
            decoded = default_decode_ast_prompting(case["python"], ReturnFormat.PYTHON)
        except Exception:  # noqa: BLE001 - BFCL treats any decoder failure alike
            decoded = None
    else:
        decoded = [{c["name"]: c["arguments"]} for c in case["calls"]]
    if "relevance" in category:  # irrelevance and relevance, as BFCL's relevance runner
        has_call = decoded is not None and not is_empty_output(decoded)
        valid = not has_call if "irrelevance" in category else has_call
        return {"valid": valid, "error_type": "" if valid else "relevance"}
    if decoded is None:
        return {"valid": False, "error_type": "ast_decoder:decoder_failed"}
    if not is_function_calling_format_output(decoded):
        return {"valid": False, "error_type": "ast_decoder:decoder_wrong_output_format"}
    result = ast_checker(case["functions"], decoded, case["possible_answer"], language, category, model)
    return {"valid": bool(result["valid"]), "error_type": result.get("error_type", "")}


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        for line in fh:
            print(json.dumps(verdict(json.loads(line))))


if __name__ == "__main__":
    main()
