def generate(data):
    # What layerscope grades for this question: its problem-set ids (graded even when blank),
    # and the form inputs' names for them (answers-name cannot hold the ids' dots).
    data["params"]["layerscope"] = {
        "questions": ["p4.pool2.rows", "p4.pool2.cols"],
        "names": {"p4_pool2_rows": "p4.pool2.rows", "p4_pool2_cols": "p4.pool2.cols"},
    }
