from rules.evaluate import evaluate
from tests.rules.helpers import COMMON, h, one_rule, put


def test_smoke(conn, fleet):
    rs = one_rule("""
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  critical: 190
  persistence: {hours: 2, of: 3}
""" + COMMON)
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [170, 185, 186, 192, 193, 170, 170, 170])
    res = evaluate(conn, rs, "acme", (h(0), h(7)))
    print(res)
    assert [(b.hour, b.severity) for b in res.breaches] == [
        (h(2), "warning"), (h(3), "warning"), (h(4), "critical"), (h(5), "critical")]
    assert [b.value for b in res.breaches] == [186, 192, 193, 193]
    assert [c.hour for c in res.clears] == [h(6)]
