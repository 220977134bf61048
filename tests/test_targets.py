"Classification targets with more than two labels: refused with the labels named, or made binary by `positive = A, B`."
from __future__ import annotations

import numpy as np

from conftest import medwb, write_settings


def test_five_class_csv_needs_positive_labels_and_then_reports_them(tmp_path):
    import json
    import pandas as pd
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=5, n_clusters_per_class=1, random_state=0)
    names = np.array(["asthma", "bronchitis", "copd", "pneumonia", "tb"])
    pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(record_id=[f"r{i:03d}" for i in range(300)], dx=names[y]).to_csv(
        tmp_path / "dx.csv", index=False)
    base = {"reports_dir": str(tmp_path / "reports"), "datasets": "dx", "models": "linear", "n_boot": "100"}
    s = write_settings(tmp_path, base, {"dataset.dx": {"path": "dx.csv", "target": "dx", "id_column": "record_id"}})
    r = medwb("run", settings=s)
    assert r.returncode != 0 and "5 classes (asthma, bronchitis, copd, pneumonia, tb)" in r.stderr and "positive = asthma, bronchitis" in r.stderr
    assert not (tmp_path / "reports" / "dx").exists()
    s = write_settings(tmp_path, base, {"dataset.dx": {"path": "dx.csv", "target": "dx", "id_column": "record_id", "positive": "copd, tb"}})
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    (mf,) = (tmp_path / "reports" / "dx" / "linear").glob("*/metrics.json")
    m = json.loads(mf.read_text())
    assert m["positive_class"] == "copd, tb" and m["metrics"]["roc_auc"] > 0.6
    html = (mf.parent / "report.html").read_text()
    assert "Positive class: copd, tb." in html and "1 = copd, tb (together); 0 = asthma, bronchitis, pneumonia" in html
