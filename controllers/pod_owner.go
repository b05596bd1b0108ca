package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// podToOwner maps a pod the operator created to the resource it belongs to,
// by the instance label; other pods map to nothing.
func podToOwner(component string) handler.MapFunc {
	return func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[specs.LabelManagedBy] != specs.ManagedBy || l[specs.LabelComponent] != component || l[specs.LabelInstance] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: l[specs.LabelInstance]}}}
	}
}
