"""The served model as code: MLflow copies this file into the model and runs it on load.

Logging the model from code rather than as a pickled object means loading a model never
unpickles anything; the class itself comes from the installed ``anyq`` package.
"""

from mlflow.models import set_model

from anyq.serving.pyfunc import AnyQuantilePyfunc

set_model(AnyQuantilePyfunc())
