"""preedit.training: learn the pre-editor end to end through a differentiable codec proxy.

```
 source frames ──> PreEditorNet ──> codec proxy C'_q ──> reconstruction + rate estimate
                                                    └──> loss vs the *original source*
```
"""
