package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func (in *SynapseReplication) DeepCopyInto(out *SynapseReplication) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.DeepCopyInto(&out.Spec)
	in.Status.DeepCopyInto(&out.Status)
}
func (in *SynapseReplication) DeepCopy() *SynapseReplication {
	if in == nil {
		return nil
	}
	out := new(SynapseReplication)
	in.DeepCopyInto(out)
	return out
}
func (in *SynapseReplication) DeepCopyObject() runtime.Object { return in.DeepCopy() }
func (in *SynapseReplicationList) DeepCopyInto(out *SynapseReplicationList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]SynapseReplication, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}
func (in *SynapseReplicationList) DeepCopy() *SynapseReplicationList {
	if in == nil {
		return nil
	}
	out := new(SynapseReplicationList)
	in.DeepCopyInto(out)
	return out
}
func (in *SynapseReplicationList) DeepCopyObject() runtime.Object { return in.DeepCopy() }
func (in *SynapseReplicationSpec) DeepCopyInto(out *SynapseReplicationSpec) {
	*out = *in
	in.Redis.DeepCopyInto(&out.Redis)
	if in.HomeserverConfigRef != nil {
		x := *in.HomeserverConfigRef
		out.HomeserverConfigRef = &x
	}
	if in.SolicitInterval != nil {
		x := *in.SolicitInterval
		out.SolicitInterval = &x
	}
}
func (in *SynapseRedisSpec) DeepCopyInto(out *SynapseRedisSpec) {
	*out = *in
	if in.PasswordSecretRef != nil {
		x := *in.PasswordSecretRef
		out.PasswordSecretRef = &x
	}
	if in.TLS != nil {
		x := *in.TLS
		if in.TLS.CARef != nil {
			y := *in.TLS.CARef
			x.CARef = &y
		}
		out.TLS = &x
	}
}
func (in *SynapseReplicationStatus) DeepCopyInto(out *SynapseReplicationStatus) {
	*out = *in
	if in.Conditions != nil {
		out.Conditions = make([]metav1.Condition, len(in.Conditions))
		for i := range in.Conditions {
			in.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
	out.MissingWriters = append([]SynapseWriterRef(nil), in.MissingWriters...)
	out.UnexpectedWriters = append([]SynapseWriterRef(nil), in.UnexpectedWriters...)
	out.Responders = append([]string(nil), in.Responders...)
	if in.Streams != nil {
		out.Streams = make([]SynapseStreamStatus, len(in.Streams))
		for i, s := range in.Streams {
			out.Streams[i] = s
			if s.Writers != nil {
				out.Streams[i].Writers = make([]SynapseWriterStatus, len(s.Writers))
				for j, w := range s.Writers {
					out.Streams[i].Writers[j] = w
					if w.LastAdvanceTime != nil {
						out.Streams[i].Writers[j].LastAdvanceTime = w.LastAdvanceTime.DeepCopy()
					}
				}
			}
		}
	}
	if in.Redis != nil {
		x := *in.Redis
		out.Redis = &x
	}
	if in.LastMessageTime != nil {
		out.LastMessageTime = in.LastMessageTime.DeepCopy()
	}
	if in.LastSolicitTime != nil {
		out.LastSolicitTime = in.LastSolicitTime.DeepCopy()
	}
}
